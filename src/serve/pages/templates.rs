//! The console's markup, in maud: checked at compile time, and every
//! interpolated value is escaped by the macro (tags, errors, log lines and
//! recipe fields included), so no page is built by pasting strings.
//!
//! Every figure is in the HTML; the script only keeps it current. Parts the
//! script refreshes carry `data-live` and an `id`; times carry their RFC
//! 3339 value in `datetime` so the script can tick them between refreshes
//! (`data-since`: elapsed, `data-countdown` and `data-rel`: relative).
//!
//! The pages hold no control button. Where an operator could act (DESIGN.md
//! section 15), an empty, hidden element says which actions apply and on
//! what (`data-control`, `data-actions`, [`controls`]); the script makes the
//! buttons there once a control token is entered. Without JavaScript, and
//! until a token is entered, every page is read-only.

use std::time::SystemTime;

use maud::{html, Markup, DOCTYPE};

use crate::model::build::BuildState;
use crate::model::control::ControlAction;
use crate::model::time::rfc3339;
use crate::serve::pages::assets;
use crate::serve::pages::view::{
    BuildPage, BuildRow, FailureRow, Overview, PhaseRow, RecipePage, RecipeState, Running,
};

/// `secs` for people: `4.2 s`, `3 min 12 s`, `2 h 5 min`, `3 d 4 h`.
pub fn duration(secs: f64) -> String {
    let secs = secs.max(0.0);
    if secs < 10.0 {
        return format!("{secs:.1} s");
    }
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        3600..=86399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// Whole seconds for people, as times ticking by the second show them:
/// `8 s`, `3 min 12 s`, `2 h 5 min`.
pub fn whole(secs: u64) -> String {
    if secs < 10 {
        format!("{secs} s")
    } else {
        duration(secs as f64)
    }
}

/// `t` relative to `now`: `3 min 12 s ago`, `in 4 min 10 s`, `now`.
pub fn relative(t: SystemTime, now: SystemTime) -> String {
    match t.duration_since(now) {
        Ok(ahead) if ahead.as_secs() >= 1 => {
            format!("in {}", whole(ahead.as_secs()))
        }
        Ok(_) => "now".to_string(),
        Err(e) => {
            let behind = e.duration().as_secs();
            if behind < 1 {
                "now".to_string()
            } else {
                format!("{} ago", whole(behind))
            }
        }
    }
}

fn millis(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// A past or future time, relative, ticking with the script.
fn when(t: Option<SystemTime>, now: SystemTime) -> Markup {
    match t {
        Some(t) => {
            let iso = rfc3339(t);
            html! { time datetime=(iso) title=(iso) data-rel { (relative(t, now)) } }
        }
        None => html! { span.muted { "—" } },
    }
}

/// Time since `t`, ticking with the script.
fn since(t: SystemTime, now: SystemTime) -> Markup {
    let secs = now.duration_since(t).unwrap_or_default().as_secs();
    html! { time datetime=(rfc3339(t)) title={"since " (rfc3339(t))} data-since { (whole(secs)) } }
}

fn state_badge(state: BuildState) -> Markup {
    html! { span class={"badge state-" (state.as_str())} { (state.as_str()) } }
}

fn recipe_badge(state: RecipeState) -> Markup {
    html! { span class={"badge recipe-" (state.as_str())} { (state.as_str()) } }
}

fn build_link(b: &BuildRow) -> Markup {
    html! { a href={"/builds/" (b.id)} { "#" (b.id) } }
}

fn recipe_link(id: &str) -> Markup {
    html! { a href={"/recipes/" (id)} { (id) } }
}

/// `s` as one URL path segment: everything but ASCII letters, digits and
/// `-._~@+:` percent-encoded.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@+:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where the script puts the buttons of `actions`, which act on `name`
/// by `POST {base}/{action}`: an empty, hidden table cell (`cell`) or
/// block. With no action it is still there, to keep a table's columns.
fn controls(cell: bool, base: &str, name: &str, actions: &[ControlAction]) -> Markup {
    let list = (!actions.is_empty()).then(|| {
        actions
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    });
    let base = list.as_ref().map(|_| base);
    let name = list.as_ref().map(|_| name);
    html! {
        @if cell {
            td.actions hidden data-control=[base] data-name=[name] data-actions=[list] {}
        } @else {
            div.actions hidden data-control=[base] data-name=[name] data-actions=[list] {}
        }
    }
}

/// The header of a table's control column, hidden like its cells.
fn controls_header() -> Markup {
    html! { th.actions scope="col" hidden { "Actions" } }
}

/// The page around `content`: head, header with the live indicator and
/// the unreachable banner, footer.
fn layout(title: &str, farm_id: &str, page: &str, live: Live, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · " (farm_id) " · farmhand" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href=(assets::css_url());
                script src=(assets::js_url()) defer {}
            }
            body data-page=(page) data-building=(if live.building { "1" } else { "0" })
                data-now=(millis(live.now)) data-control=(if live.control { "on" } else { "off" }) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    nav aria-label="Farm" {
                        a.brand href="/" { "farmhand" }
                        span.farm { (farm_id) }
                    }
                    p #live .live role="status" {
                        span #live-state { "Server-rendered at " (rfc3339(live.now)) }
                    }
                    // The control token form (section 15 of the design):
                    // made and shown by the script when the control API
                    // is on; without JavaScript the page is read-only.
                    @if live.control {
                        div #control .control hidden {}
                    } @else {
                        p #control-off .control-off
                            title="Set [http].control_token_file to act on the farm from these pages" {
                            "Read-only"
                        }
                    }
                }
                div #banner .banner role="alert" hidden {
                    "The daemon cannot be reached. The figures below may be out of date; retrying…"
                }
                main #main { (content) }
                footer.bottom {
                    p {
                        a href="/status" { "/status" } " · "
                        a href="/metrics" { "/metrics" } " · "
                        a href="/builds" { "/builds" } " · "
                        a href="/healthz" { "/healthz" }
                    }
                }
            }
        }
    }
}

/// What the script needs from the page.
#[derive(Clone, Copy)]
struct Live {
    building: bool,
    now: SystemTime,
    /// The control API is on: the script makes the token form.
    control: bool,
}

fn phase_list(phases: &[PhaseRow]) -> Markup {
    html! {
        ol.phases aria-label="Phases" {
            @for p in phases {
                li class={"phase phase-" (p.state.as_str())}
                    aria-current=[(p.state == crate::serve::pages::view::PhaseState::Current).then_some("step")] {
                    span.phase-name { (p.phase.as_str()) }
                    " "
                    span.phase-state { (p.state.as_str()) }
                    @if let Some(d) = p.duration {
                        " " span.phase-duration { (duration(d)) }
                    }
                }
            }
        }
    }
}

fn running_section(r: &Running, now: SystemTime) -> Markup {
    let b = &r.build;
    html! {
        h2 #in-flight-title { "Building " (b.recipe) " " (b.version) }
        (controls(false, &format!("/builds/{}", b.id),
            &format!("#{} {} {}", b.id, b.recipe, b.version), &[ControlAction::Cancel]))
        dl.meta {
            dt { "Build" } dd { (build_link(b)) }
            dt { "Recipe" } dd { (recipe_link(&b.recipe)) }
            dt { "Tag" } dd { code { (b.tag) } }
            dt { "Trigger" } dd { (b.trigger.as_str()) }
            dt { "Phase" } dd #in-flight-phase { (b.phase.map(crate::model::build::Phase::as_str).unwrap_or("starting")) }
            dt { "Started" } dd { (when(b.started_at, now)) }
            dt { "Elapsed" } dd {
                @match b.started_at {
                    Some(t) => (since(t, now)),
                    None => (duration(r.elapsed)),
                }
            }
            dt { "Estimate" } dd {
                @match r.estimate {
                    Some(e) => {
                        "about " (duration(e)) " (the previous successful build) "
                        @if r.overdue() {
                            span.badge.overdue { "overdue" }
                        }
                        progress #in-flight-progress max=(e) value=(r.elapsed.min(e)) {
                            (format!("{:.0} %", r.elapsed / e.max(0.001) * 100.0))
                        }
                    }
                    None => { span.muted { "none (no previous successful build)" } }
                }
            }
        }
        (phase_list(&r.phases))
        h3 { "Log " span.muted { "(last lines; " a href=(b.log_url.clone().unwrap_or_default()) { "whole log" } ")" } }
        pre #log-tail .log tabindex="0" aria-label="Log of the running build"
            data-build=(b.id) data-follow={"/builds/" (b.id) "/log?follow=1"} data-tail="200" {
            (r.log_tail)
        }
    }
}

fn failure_table(failures: &[FailureRow], now: SystemTime) -> Markup {
    html! {
        @if failures.is_empty() {
            p.empty { "No failures." }
        } @else {
            div.scroll {
                table {
                    thead { tr {
                        th scope="col" { "Build" }
                        th scope="col" { "Failures in a row" }
                        th scope="col" { "Next retry" }
                        th scope="col" { "Last error" }
                        (controls_header())
                    } }
                    tbody {
                        @for f in failures {
                            tr data-failure=(f.key) {
                                td { (recipe_link(&f.recipe)) "@" (f.version) }
                                td.num { (f.failures) }
                                @let iso = rfc3339(f.next_retry);
                                td { time datetime=(iso) title=(iso) data-countdown {
                                    (relative(f.next_retry, now))
                                } }
                                td { code.error { (f.error) } }
                                (controls(true, &format!("/failures/{}", segment(&f.key)), &f.key, &f.actions))
                            }
                        }
                    }
                }
            }
        }
    }
}

fn build_table(builds: &[BuildRow], now: SystemTime, show_recipe: bool) -> Markup {
    html! {
        @if builds.is_empty() {
            p.empty { "No builds yet." }
        } @else {
            div.scroll {
                table {
                    thead { tr {
                        th scope="col" { "Build" }
                        @if show_recipe { th scope="col" { "Recipe" } }
                        th scope="col" { "Version" }
                        th scope="col" { "State" }
                        th scope="col" { "Started" }
                        th scope="col" { "Duration" }
                        th scope="col" { "Error" }
                    } }
                    tbody {
                        @for b in builds {
                            tr data-build=(b.id) {
                                td { (build_link(b)) }
                                @if show_recipe { td { (recipe_link(&b.recipe)) } }
                                td { (b.version) }
                                td { (state_badge(b.state)) }
                                td { (when(b.started_at, now)) }
                                td.num { (b.duration.map(duration).unwrap_or_default()) }
                                td { @if let Some(e) = &b.error { code.error { (e) } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /`.
pub fn overview(o: &Overview) -> Markup {
    let now = o.now;
    let content = html! {
        section #summary data-live aria-labelledby="summary-title" {
            h1 #summary-title { (o.farm_id) }
            p.state {
                @match &o.running {
                    Some(r) => {
                        span.badge.state-running { "building" } " "
                        (r.build.recipe) " " (r.build.version)
                    }
                    None => { span.badge.state-idle { "idle" } }
                }
            }
            dl.counters {
                div { dt { "Version" } dd { (o.version) } }
                div { dt { "Uptime" } dd { (since(o.started_at, now)) } }
                div { dt { "Builds" } dd #count-attempted { (o.attempted) } }
                div { dt { "Succeeded" } dd #count-succeeded { (o.succeeded) } }
                div { dt { "Failed" } dd #count-failed { (o.failed) } }
                div { dt { "Cancelled" } dd #count-cancelled { (o.cancelled) } }
                div { dt { "Queued" } dd #count-queued { (o.queue_depth) } }
                div { dt { "Published" } dd #count-published { (o.published_packages) } }
                div { dt { "Sandbox" } dd { (o.sandbox) } }
            }
            @if let Some(h) = &o.held {
                p.warning { strong { "Builds held: " } (h) }
            }
            @if let Some(e) = &o.repository_error {
                p.warning { strong { "Repository: " } (e) }
            }
        }
        section #in-flight data-live aria-labelledby="in-flight-title" {
            @match &o.running {
                Some(r) => (running_section(r, now)),
                None => {
                    h2 #in-flight-title { "In flight" }
                    p.empty { "Idle: no build is running." }
                }
            }
        }
        section #queue data-live aria-labelledby="queue-title" {
            h2 #queue-title { "Queue " span.muted { "(" (o.queue_depth) ")" } }
            @if o.queue.is_empty() {
                p.empty { "The queue is empty." }
            } @else {
                ol.queue {
                    @for q in &o.queue {
                        li data-recipe=(q.recipe) {
                            (recipe_link(&q.recipe)) " " (q.version) " "
                            span.muted { "tag " code { (q.tag) } ", " (q.trigger.as_str()) }
                        }
                    }
                }
                @if o.queue_depth > o.queue.len() {
                    p.muted { "… and " (o.queue_depth - o.queue.len()) " more." }
                }
            }
        }
        section #failures data-live aria-labelledby="failures-title" {
            h2 #failures-title { "Failures " span.muted { "(" (o.failures.len()) ")" } }
            (failure_table(&o.failures, now))
        }
        section #recipes aria-labelledby="recipes-title" {
            h2 #recipes-title { "Recipes" }
            form.filter method="get" action="/" role="search" {
                label for="filter" { "Filter recipes" }
                input #filter type="search" name="filter" value=(o.filter)
                    autocomplete="off" spellcheck="false" placeholder="recipe id";
                button type="submit" { "Filter" }
            }
            div #recipe-table data-live {
                p.muted #recipe-count {
                    (o.recipes.len()) " of " (o.recipes_total) " recipes"
                }
                div.scroll {
                    table.recipes {
                        thead { tr {
                            th scope="col" { "Recipe" }
                            th scope="col" { "State" }
                            th scope="col" { "Newest published" }
                            th scope="col" { "Last poll" }
                            th scope="col" { "Next poll" }
                            th scope="col" { "Webhook" }
                            (controls_header())
                        } }
                        tbody {
                            @for r in &o.recipes {
                                tr data-recipe=(r.id) {
                                    td { (recipe_link(&r.id)) }
                                    td {
                                        (recipe_badge(r.state))
                                        @if r.paused && r.state != RecipeState::Paused {
                                            " " (recipe_badge(RecipeState::Paused))
                                        }
                                    }
                                    td { @match &r.published { Some(v) => (v), None => span.muted { "—" } } }
                                    td {
                                        (when(r.last_poll, now))
                                        @if r.poll_ok == Some(false) { " " span.badge.state-failed { "failed" } }
                                    }
                                    td { (when(r.next_poll, now)) }
                                    td { (if r.webhook { "on" } else { "off" }) }
                                    (controls(true, &format!("/recipes/{}", segment(&r.id)), &r.id, &r.actions))
                                }
                            }
                        }
                    }
                }
            }
        }
        @if !o.invalid.is_empty() {
            section #invalid data-live aria-labelledby="invalid-title" {
                h2 #invalid-title { "Invalid recipes " span.muted { "(" (o.invalid.len()) ")" } }
                dl.invalid {
                    @for (id, err) in &o.invalid {
                        dt { (recipe_link(id)) " " span.badge.recipe-invalid { "invalid" } }
                        dd { pre.error { (err) } }
                    }
                }
            }
        } @else {
            section #invalid data-live hidden {}
        }
        section #timeline data-live aria-labelledby="timeline-title" {
            h2 #timeline-title { "Recent builds" }
            @if o.timeline.is_empty() {
                p.empty { "No finished builds yet." }
            } @else {
                ol.timeline {
                    @for b in &o.timeline {
                        li data-build=(b.id) class={"state-" (b.state.as_str())} {
                            (state_badge(b.state)) " "
                            a href={"/builds/" (b.id)} { "#" (b.id) " " (b.recipe) " " (b.version) }
                            " "
                            span.muted {
                                (when(b.finished_at.or(b.started_at), now))
                                @if let Some(d) = b.duration { ", took " (duration(d)) }
                            }
                            @if let Some(e) = &b.error {
                                br;
                                code.error { (b.phase.map(crate::model::build::Phase::as_str).unwrap_or("")) ": " (e) }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(
        "Overview",
        &o.farm_id,
        "overview",
        Live {
            building: o.running.is_some(),
            now,
            control: o.control,
        },
        content,
    )
}

/// `GET /builds/{id}` for a browser.
pub fn build(p: &BuildPage) -> Markup {
    let b = &p.build;
    let now = p.now;
    let running = b.state == BuildState::Running;
    let content = html! {
        nav.crumbs aria-label="Build navigation" {
            a href="/" { "Overview" } " › "
            (recipe_link(&b.recipe)) " › "
            span { "build #" (b.id) }
            span.neighbours {
                @if let Some(prev) = p.previous {
                    a rel="prev" href={"/builds/" (prev)} { "← previous build" }
                }
                @if let Some(next) = p.next {
                    a rel="next" href={"/builds/" (next)} { "next build →" }
                }
            }
        }
        section #build-summary data-live aria-labelledby="build-title" {
            h1 #build-title { "Build #" (b.id) ": " (b.recipe) " " (b.version) " " (state_badge(b.state)) }
            @if running {
                (controls(false, &format!("/builds/{}", b.id),
                    &format!("#{} {} {}", b.id, b.recipe, b.version), &[ControlAction::Cancel]))
            }
            dl.meta {
                dt { "Recipe" } dd { (recipe_link(&b.recipe)) }
                dt { "Version" } dd { (b.version) }
                dt { "Tag" } dd { code { (b.tag) } }
                dt { "Trigger" } dd { (b.trigger.as_str()) }
                dt { "State" } dd { (b.state.as_str()) }
                dt { "Started" } dd { (when(b.started_at, now)) }
                dt { "Finished" } dd { (when(b.finished_at, now)) }
                dt { (if running { "Elapsed" } else { "Duration" }) } dd {
                    @match (running, b.started_at, b.duration) {
                        (true, Some(t), _) => (since(t, now)),
                        (_, _, Some(d)) => (duration(d)),
                        _ => span.muted { "—" },
                    }
                }
                dt { "Previous successful build took" } dd {
                    @match p.previous_duration {
                        Some(d) => (duration(d)),
                        None => span.muted { "—" },
                    }
                }
                dt { "Log" } dd { @if let Some(u) = &b.log_url { a href=(u) { "plain text" } } }
            }
            @if let Some(e) = &b.error {
                div.failure {
                    h2 { "Error" @if let Some(ph) = b.phase { " in " (ph.as_str()) } }
                    pre.error { (e) }
                }
            }
            h2 { "Phases" }
            (phase_list(&p.phases))
        }
        section #build-log aria-labelledby="log-title" {
            h2 #log-title { "Log" }
            @if p.log_truncated {
                p.muted { "The end of the log; the " a href=(b.log_url.clone().unwrap_or_default()) { "whole log" } " is plain text." }
            }
            pre #log .log tabindex="0" aria-label="Build log" data-build=(b.id)
                data-follow=[running.then(|| format!("/builds/{}/log?follow=1", b.id))] {
                (p.log)
            }
        }
    };
    layout(
        &format!("Build #{}", b.id),
        &p.farm_id,
        "build",
        Live {
            building: running,
            now,
            control: p.control,
        },
        content,
    )
}

/// `GET /recipes/{id}` for a browser.
pub fn recipe(p: &RecipePage) -> Markup {
    let now = p.now;
    let s = &p.settings;
    let opt = |v: &Option<String>| -> Markup {
        match v {
            Some(v) => html! { code { (v) } },
            None => html! { span.muted { "—" } },
        }
    };
    let content = html! {
        nav.crumbs aria-label="Recipe navigation" {
            a href="/" { "Overview" } " › " span { "recipe " (p.id) }
        }
        section #recipe-summary data-live data-recipe=(p.id) aria-labelledby="recipe-title" {
            h1 #recipe-title {
                (p.id) " " (recipe_badge(p.state))
                @if p.paused && p.state != RecipeState::Paused {
                    " " (recipe_badge(RecipeState::Paused))
                }
            }
            (controls(false, &format!("/recipes/{}", segment(&p.id)), &p.id, &p.actions))
            @if let Some(e) = &p.invalid {
                div.failure { h2 { "Invalid recipe" } pre.error { (e) } }
            }
        }
        section #settings aria-labelledby="settings-title" {
            h2 #settings-title { "Settings" }
            dl.meta {
                dt { "Upstream" } dd { (opt(&s.git)) }
                dt { "Tag pattern" } dd { (opt(&s.tag_pattern)) }
                dt { "Poll interval" } dd { @match s.interval { Some(i) => (humantime::format_duration(i)), None => span.muted { "—" } } }
                dt { "Webhook" } dd { (if s.webhook { "on" } else { "off" }) }
                dt { "Minimum version" } dd { (opt(&s.min_version)) }
                dt { "Revision" } dd { @match s.revision { Some(r) => (r), None => span.muted { "—" } } }
                dt { "Submodules" } dd { (if s.submodules { "yes" } else { "no" }) }
                dt { "Backlog" } dd { (if s.backlog.is_empty() { "—" } else { s.backlog }) }
                @if !s.description.is_empty() { dt { "Description" } dd { (s.description) } }
                @if !s.homepage.is_empty() { dt { "Homepage" } dd { (s.homepage) } }
                @if !s.license.is_empty() { dt { "License" } dd { (s.license) } }
                @if !s.path.is_empty() { dt { "File" } dd { code { (s.path) } } }
            }
        }
        section #published data-live aria-labelledby="published-title" {
            h2 #published-title { "Published versions" }
            @if p.published.is_empty() {
                p.empty { "None published." }
            } @else {
                ol.versions { @for v in &p.published { li { (v) } } }
            }
        }
        section #backoff data-live aria-labelledby="backoff-title" {
            h2 #backoff-title { "Backoff" }
            (failure_table(&p.failures, now))
        }
        section #recipe-builds data-live aria-labelledby="builds-title" {
            h2 #builds-title { "Builds" }
            (build_table(&p.builds, now, false))
        }
        section #polls data-live aria-labelledby="polls-title" {
            h2 #polls-title { "Polls" }
            p { "Next poll: " (when(p.next_poll, now)) }
            @if p.polls.is_empty() {
                p.empty { "Not polled yet." }
            } @else {
                div.scroll {
                    table {
                        thead { tr {
                            th scope="col" { "When" }
                            th scope="col" { "Result" }
                            th scope="col" { "Tags seen" }
                            th scope="col" { "Matching" }
                            th scope="col" { "Error" }
                        } }
                        tbody {
                            @for poll in &p.polls {
                                tr {
                                    td { (when(poll.at, now)) }
                                    td { @if poll.ok { span.badge.state-succeeded { "ok" } } @else { span.badge.state-failed { "failed" } } }
                                    td.num { (poll.tags_seen) }
                                    td.num { (poll.matches) }
                                    td { @if let Some(e) = &poll.error { code.error { (e) } } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let building = p.state == RecipeState::Building;
    let control = p.control;
    layout(
        &p.id,
        &p.farm_id,
        "recipe",
        Live {
            building,
            now,
            control,
        },
        content,
    )
}

/// A page for an unknown build or recipe (served with 404).
pub fn not_found(farm_id: &str, what: &str) -> Markup {
    layout(
        "Not found",
        farm_id,
        "missing",
        Live {
            building: false,
            now: SystemTime::now(),
            control: false,
        },
        html! {
            h1 { "Not found" }
            p { (what) }
            p { a href="/" { "Back to the overview" } }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build::{BuildKey, FailureRecord, Phase, QueuedBuild, Trigger};
    use crate::model::recipe::Roster;
    use crate::serve::builds::{BuildDetail, BuildSummary, PhaseView};
    use crate::serve::pages::view;
    use crate::serve::status::Snapshot;
    use std::collections::BTreeMap;
    use std::time::Duration;

    const EVIL: &str = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>'&";

    fn build(id: u64, state: BuildState) -> BuildSummary {
        let now = rfc3339(SystemTime::now());
        BuildSummary {
            id,
            recipe: "evil".into(),
            version: "1.0.0-1".into(),
            tag: format!("v1.0.0{EVIL}"),
            trigger: Trigger::Poll,
            state,
            started_at: now.clone(),
            finished_at: (state != BuildState::Running).then(|| now.clone()),
            duration: Some(1.0),
            phase: Some(Phase::Building),
            error: Some(EVIL.into()),
            log_url: Some(format!("/builds/{id}/log")),
            log: Some(format!("/builds/{id}/log")),
        }
    }

    fn detail(id: u64, state: BuildState) -> BuildDetail {
        BuildDetail {
            summary: build(id, state),
            phases: vec![PhaseView {
                phase: Phase::Fetching,
                started_at: rfc3339(SystemTime::now()),
                duration: Some(0.5),
            }],
            previous_duration: Some(2.0),
            elapsed: Some(3.0),
        }
    }

    fn hostile_snapshot() -> Snapshot {
        let now = SystemTime::now();
        Snapshot {
            farm_id: EVIL.into(),
            started_at: now,
            recipes: vec!["evil".into()],
            invalid: BTreeMap::from([("bad".to_string(), EVIL.to_string())]),
            builds_attempted: 3,
            builds_succeeded: 1,
            builds_failed: 1,
            builds_cancelled: 0,
            paused: Vec::new(),
            running: Some(detail(3, BuildState::Running)),
            failures: BTreeMap::from([(
                BuildKey::new("evil", "1.0.0-1"),
                FailureRecord {
                    failures: 2,
                    next_retry: now + Duration::from_secs(60),
                    error: EVIL.into(),
                    tag: EVIL.into(),
                },
            )]),
            queue: vec![QueuedBuild {
                recipe: "evil".into(),
                tag: EVIL.into(),
                upstream: "1.0.1".into(),
                version: "1.0.1-1".into(),
                trigger: Trigger::Webhook,
            }],
            queue_depth: 1,
            polls: BTreeMap::new(),
            newest_published: BTreeMap::from([("evil".to_string(), EVIL.to_string())]),
            published_packages: 1,
            repository_error: Some(EVIL.into()),
            held: Some(EVIL.into()),
            sandbox: "none",
            recent: vec![
                build(2, BuildState::Failed),
                build(1, BuildState::Succeeded),
            ],
            control: true,
        }
    }

    #[test]
    fn every_interpolated_string_is_escaped() {
        let s = hostile_snapshot();
        let roster = Roster::default();
        let now = SystemTime::now();
        let overview = view::Overview::new(&s, &roster, EVIL, EVIL.into(), now);
        let overview_all = view::Overview::new(&s, &roster, "", EVIL.into(), now);
        let build = view::BuildPage::new(
            EVIL,
            &detail(2, BuildState::Failed),
            (Some(1), None),
            EVIL.into(),
            false,
            now,
        );
        let pages = [
            super::overview(&overview).into_string(),
            super::overview(&overview_all).into_string(),
            super::build(&build).into_string(),
            not_found(EVIL, EVIL).into_string(),
        ];
        for page in pages {
            assert!(!page.contains("<script>alert"), "{page}");
            assert!(!page.contains("<img"), "{page}");
            assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img"));
            assert_eq!(
                page.matches("<script").count(),
                1,
                "only the console's own script"
            );
        }
    }

    fn watched(id: &str) -> std::sync::Arc<crate::model::recipe::Recipe> {
        let dir = std::path::Path::new("/srv/recipes").join(id);
        let text = "[upstream]\ngit = 'https://example.org/z.git'\ntag_pattern = '^v(.*)$'\n";
        std::sync::Arc::new(
            crate::model::recipe::parse_recipe(
                id,
                &dir,
                &dir.join("recipe.toml"),
                crate::model::recipe::RecipeFile::Farmhand,
                text,
                Duration::from_secs(3600),
            )
            .unwrap(),
        )
    }

    #[test]
    fn pages_say_where_control_buttons_go_and_hold_none() {
        let now = SystemTime::now();
        let mut s = hostile_snapshot();
        s.recipes = vec!["evil".into(), "zlib".into()];
        s.paused = vec!["evil".into()];
        s.failures.insert(
            BuildKey::new("bad", "2.0-1"),
            FailureRecord {
                failures: 1,
                next_retry: now,
                error: "x".into(),
                tag: "v2.0".into(),
            },
        );
        let mut roster = Roster::default();
        for id in ["evil", "zlib"] {
            roster.recipes.insert(id.into(), watched(id));
        }
        let o = view::Overview::new(&s, &roster, "", String::new(), now);
        let page = super::overview(&o).into_string();
        let place = |base: &str, name: &str, actions: &str| {
            format!(
                "class=\"actions\" hidden data-control=\"{base}\" data-name=\"{name}\" \
                 data-actions=\"{actions}\"></"
            )
        };
        for want in [
            place("/recipes/zlib", "zlib", "poll pause"),
            // Paused while its build runs: resume, and it says paused.
            place("/recipes/evil", "evil", "resume"),
            place("/builds/3", "#3 evil 1.0.0-1", "cancel"),
            place("/failures/evil@1.0.0-1", "evil@1.0.0-1", "retry"),
        ] {
            assert!(page.contains(&want), "{want} in {page}");
        }
        assert!(page.contains(
            "recipe-building\">building</span> <span class=\"badge recipe-paused\">paused"
        ));
        // The invalid recipe's row and failure get none, but keep the column.
        assert_eq!(page.matches("data-actions=\"retry\"").count(), 1);
        assert_eq!(
            page.matches("<td class=\"actions\" hidden></td>").count(),
            2
        );
        assert_eq!(
            page.matches("<th class=\"actions\" scope=\"col\" hidden>")
                .count(),
            2
        );
        // Every place is hidden; the only button is the filter form's.
        assert_eq!(
            page.matches("class=\"actions\"").count(),
            page.matches("class=\"actions\" hidden").count() + 2
        );
        assert_eq!(page.matches("<button").count(), 1, "{page}");
        let slot = page.split("id=\"control\"").nth(1).unwrap();
        assert!(
            slot.split("</div>").next().unwrap().ends_with(" hidden>"),
            "the token form's slot is empty and hidden: {slot}"
        );
        assert!(page.contains("data-control=\"on\"") && !page.contains("Read-only"));
        // With the control API off: no slot for the form, and it says so.
        let mut off = o.clone();
        off.control = false;
        let page = super::overview(&off).into_string();
        assert!(!page.contains("id=\"control\"") && page.contains(">Read-only</p>"));
        assert!(page.contains("data-control=\"off\""));

        // A running build's page offers cancel; a finished one's does not.
        let running = view::BuildPage::new(
            "farm",
            &detail(3, BuildState::Running),
            (None, None),
            String::new(),
            false,
            now,
        );
        let page = super::build(&running).into_string();
        assert!(page.contains(&place("/builds/3", "#3 evil 1.0.0-1", "cancel")));
        assert!(!page.contains("<button"));
        let done = view::BuildPage::new(
            "farm",
            &detail(2, BuildState::Failed),
            (None, None),
            String::new(),
            false,
            now,
        );
        assert!(!super::build(&done).into_string().contains("data-actions"));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("musl@1.2.5-1"), "musl@1.2.5-1");
        assert_eq!(segment("g++@1:2.0~rc1-1"), "g++@1:2.0~rc1-1");
        assert_eq!(segment("a/b c%?#\"é"), "a%2Fb%20c%25%3F%23%22%C3%A9");
    }

    #[test]
    fn durations_and_relative_times_read_well() {
        assert_eq!(duration(4.24), "4.2 s");
        assert_eq!(duration(42.0), "42 s");
        assert_eq!(duration(192.0), "3 min 12 s");
        assert_eq!(duration(7500.0), "2 h 5 min");
        assert_eq!(duration(273600.0), "3 d 4 h");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            relative(now + Duration::from_secs(250), now),
            "in 4 min 10 s"
        );
        assert_eq!(relative(now - Duration::from_secs(5), now), "5 s ago");
        assert_eq!(whole(8), "8 s");
        assert_eq!(whole(72), "1 min 12 s");
        assert_eq!(relative(now, now), "now");
    }
}
