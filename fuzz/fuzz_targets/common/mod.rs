//! Shared by the config and recipe targets.

/// Renders `template` (TOML lines; a line ending in ` @` takes a value),
/// filling the `slot`-th value with `value` (as a TOML string when `quote`)
/// and every other one with its entry in `defaults`.
pub fn render(
    template: &[&str],
    defaults: &[&str],
    slot: usize,
    value: &str,
    quote: bool,
) -> String {
    let mut out = String::new();
    let mut i = 0;
    for line in template {
        if let Some(key) = line.strip_suffix(" @") {
            let v = if i == slot {
                if quote {
                    format!("{value:?}")
                } else {
                    value.to_string()
                }
            } else {
                defaults[i].to_string()
            };
            out.push_str(&format!("{key} {v}\n"));
            i += 1;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
