# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_farmhand_global_optspecs
    string join \n config= log-level= log-format= once check h/help V/version
end

function __fish_farmhand_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_farmhand_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_farmhand_using_subcommand
    set -l cmd (__fish_farmhand_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c farmhand -n "__fish_farmhand_needs_command" -l config -d 'The farm config' -r -F
complete -c farmhand -n "__fish_farmhand_needs_command" -l log-level -d 'Verbosity' -r -f -a "debug\t'Everything, including skipped triggers'
info\t'Normal operation'
warn\t'Problems only'
error\t'Failures only'"
complete -c farmhand -n "__fish_farmhand_needs_command" -l log-format -d 'Log format: auto = journald when stderr is the journal, else logfmt' -r -f -a "auto\t'journald under systemd, else logfmt'
logfmt\t'`time=... level=INFO msg="..." key=value`'
json\t'One JSON object per line'
journald\t'Native journal protocol'"
complete -c farmhand -n "__fish_farmhand_needs_command" -l once -d 'Poll every recipe once, build and publish what is new, exit'
complete -c farmhand -n "__fish_farmhand_needs_command" -l check -d 'Validate config and recipes, print the roster and problems, exit 0 or 2'
complete -c farmhand -n "__fish_farmhand_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c farmhand -n "__fish_farmhand_needs_command" -s V -l version -d 'Print version'
complete -c farmhand -n "__fish_farmhand_needs_command" -f -a "demo" -d 'Create a self-contained demo farm and run the daemon on it'
complete -c farmhand -n "__fish_farmhand_needs_command" -f -a "ctl" -d 'Act on a running farm and read its state: poll, pause, resume, cancel, retry, status, builds, logs, events'
complete -c farmhand -n "__fish_farmhand_needs_command" -f -a "completions" -d 'Print a shell completion script for farmhand'
complete -c farmhand -n "__fish_farmhand_needs_command" -f -a "git-helper" -d 'Internal: runs one git operation for the daemon (request on stdin, answer on stdout)'
complete -c farmhand -n "__fish_farmhand_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c farmhand -n "__fish_farmhand_using_subcommand demo" -l dir -d 'Where the demo farm lives' -r -F
complete -c farmhand -n "__fish_farmhand_using_subcommand demo" -l addr -d 'HTTP listen address' -r
complete -c farmhand -n "__fish_farmhand_using_subcommand demo" -l config -d 'The farm config' -r -F
complete -c farmhand -n "__fish_farmhand_using_subcommand demo" -l log-level -d 'Verbosity' -r -f -a "debug\t'Everything, including skipped triggers'
info\t'Normal operation'
warn\t'Problems only'
error\t'Failures only'"
complete -c farmhand -n "__fish_farmhand_using_subcommand demo" -l log-format -d 'Log format: auto = journald when stderr is the journal, else logfmt' -r -f -a "auto\t'journald under systemd, else logfmt'
logfmt\t'`time=... level=INFO msg="..." key=value`'
json\t'One JSON object per line'
journald\t'Native journal protocol'"
complete -c farmhand -n "__fish_farmhand_using_subcommand demo" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and not __fish_seen_subcommand_from status builds recipe log watch poll pause resume cancel retry help" -l url -d 'The daemon\'s address, http://HOST:PORT, instead of reading it from --config' -r
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and not __fish_seen_subcommand_from status builds recipe log watch poll pause resume cancel retry help" -l token-file -d 'The file holding the control token (with --url; --config reads [http].control_token_file)' -r -F
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and not __fish_seen_subcommand_from status builds recipe log watch poll pause resume cancel retry help" -l config -d 'The farm config' -r -F
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and not __fish_seen_subcommand_from status builds recipe log watch poll pause resume cancel retry help" -l log-level -d 'Verbosity' -r -f -a "debug\t'Everything, including skipped triggers'
info\t'Normal operation'
warn\t'Problems only'
error\t'Failures only'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and not __fish_seen_subcommand_from status builds recipe log watch poll pause resume cancel retry help" -l log-format -d 'Log format: auto = journald when stderr is the journal, else logfmt' -r -f -a "auto\t'journald under systemd, else logfmt'
logfmt\t'`time=... level=INFO msg="..." key=value`'
json\t'One JSON object per line'
journald\t'Native journal protocol'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and not __fish_seen_subcommand_from status builds recipe log watch poll pause resume cancel retry help" -l json -d 'Print the API\'s JSON instead of tables and one-line results'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and not __fish_seen_subcommand_from status builds recipe log watch poll pause resume cancel retry help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and not __fish_seen_subcommand_from status builds recipe log watch poll pause resume cancel retry help" -f -a "status" -d 'The farm at a glance: the build in flight, the queue, failures, paused and invalid recipes (GET /status)'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and not __fish_seen_subcommand_from status builds recipe log watch poll pause resume cancel retry help" -f -a "builds" -d 'Recent builds, newest first (GET /builds)'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and not __fish_seen_subcommand_from status builds recipe log watch poll pause resume cancel retry help" -f -a "recipe" -d 'One recipe: paused or not, its last poll, queued versions, failures and recent builds'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and not __fish_seen_subcommand_from status builds recipe log watch poll pause resume cancel retry help" -f -a "log" -d 'A build\'s log (GET /builds/ID/log)'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and not __fish_seen_subcommand_from status builds recipe log watch poll pause resume cancel retry help" -f -a "watch" -d 'Follow the farm\'s events as they happen, one line per event (GET /events); Ctrl-C stops'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and not __fish_seen_subcommand_from status builds recipe log watch poll pause resume cancel retry help" -f -a "poll" -d 'Poll a recipe\'s upstream now, whatever its webhook setting'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and not __fish_seen_subcommand_from status builds recipe log watch poll pause resume cancel retry help" -f -a "pause" -d 'Stop polling and building a recipe until it is resumed (kept across restarts)'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and not __fish_seen_subcommand_from status builds recipe log watch poll pause resume cancel retry help" -f -a "resume" -d 'Undo a pause; the recipe is polled at once'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and not __fish_seen_subcommand_from status builds recipe log watch poll pause resume cancel retry help" -f -a "cancel" -d 'Cancel the build in flight: TERM to its processes, KILL after 5 s; its version backs off like a failure'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and not __fish_seen_subcommand_from status builds recipe log watch poll pause resume cancel retry help" -f -a "retry" -d 'Clear a failed version\'s backoff and build it next'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and not __fish_seen_subcommand_from status builds recipe log watch poll pause resume cancel retry help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from status" -l config -d 'The farm config' -r -F
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from status" -l log-level -d 'Verbosity' -r -f -a "debug\t'Everything, including skipped triggers'
info\t'Normal operation'
warn\t'Problems only'
error\t'Failures only'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from status" -l log-format -d 'Log format: auto = journald when stderr is the journal, else logfmt' -r -f -a "auto\t'journald under systemd, else logfmt'
logfmt\t'`time=... level=INFO msg="..." key=value`'
json\t'One JSON object per line'
journald\t'Native journal protocol'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from status" -l json -d 'Print the API\'s JSON instead of tables and one-line results'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from builds" -l recipe -d 'Only the builds of this recipe' -r
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from builds" -l state -d 'Only builds in this state' -r -f -a "running\t'In flight'
succeeded\t'Built and published'
failed\t'Failed'
cancelled\t'Cancelled by an operator or stopped by shutdown'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from builds" -l config -d 'The farm config' -r -F
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from builds" -l log-level -d 'Verbosity' -r -f -a "debug\t'Everything, including skipped triggers'
info\t'Normal operation'
warn\t'Problems only'
error\t'Failures only'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from builds" -l log-format -d 'Log format: auto = journald when stderr is the journal, else logfmt' -r -f -a "auto\t'journald under systemd, else logfmt'
logfmt\t'`time=... level=INFO msg="..." key=value`'
json\t'One JSON object per line'
journald\t'Native journal protocol'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from builds" -l json -d 'Print the API\'s JSON instead of tables and one-line results'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from builds" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from recipe" -l config -d 'The farm config' -r -F
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from recipe" -l log-level -d 'Verbosity' -r -f -a "debug\t'Everything, including skipped triggers'
info\t'Normal operation'
warn\t'Problems only'
error\t'Failures only'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from recipe" -l log-format -d 'Log format: auto = journald when stderr is the journal, else logfmt' -r -f -a "auto\t'journald under systemd, else logfmt'
logfmt\t'`time=... level=INFO msg="..." key=value`'
json\t'One JSON object per line'
journald\t'Native journal protocol'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from recipe" -l json -d 'Print the API\'s JSON instead of tables and one-line results'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from recipe" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from log" -l config -d 'The farm config' -r -F
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from log" -l log-level -d 'Verbosity' -r -f -a "debug\t'Everything, including skipped triggers'
info\t'Normal operation'
warn\t'Problems only'
error\t'Failures only'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from log" -l log-format -d 'Log format: auto = journald when stderr is the journal, else logfmt' -r -f -a "auto\t'journald under systemd, else logfmt'
logfmt\t'`time=... level=INFO msg="..." key=value`'
json\t'One JSON object per line'
journald\t'Native journal protocol'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from log" -s f -l follow -d 'Follow a running build\'s log until the build ends'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from log" -l json -d 'Print the API\'s JSON instead of tables and one-line results'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from log" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from watch" -l config -d 'The farm config' -r -F
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from watch" -l log-level -d 'Verbosity' -r -f -a "debug\t'Everything, including skipped triggers'
info\t'Normal operation'
warn\t'Problems only'
error\t'Failures only'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from watch" -l log-format -d 'Log format: auto = journald when stderr is the journal, else logfmt' -r -f -a "auto\t'journald under systemd, else logfmt'
logfmt\t'`time=... level=INFO msg="..." key=value`'
json\t'One JSON object per line'
journald\t'Native journal protocol'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from watch" -l json -d 'Print the API\'s JSON instead of tables and one-line results'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from watch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from poll" -l config -d 'The farm config' -r -F
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from poll" -l log-level -d 'Verbosity' -r -f -a "debug\t'Everything, including skipped triggers'
info\t'Normal operation'
warn\t'Problems only'
error\t'Failures only'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from poll" -l log-format -d 'Log format: auto = journald when stderr is the journal, else logfmt' -r -f -a "auto\t'journald under systemd, else logfmt'
logfmt\t'`time=... level=INFO msg="..." key=value`'
json\t'One JSON object per line'
journald\t'Native journal protocol'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from poll" -l json -d 'Print the API\'s JSON instead of tables and one-line results'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from poll" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from pause" -l config -d 'The farm config' -r -F
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from pause" -l log-level -d 'Verbosity' -r -f -a "debug\t'Everything, including skipped triggers'
info\t'Normal operation'
warn\t'Problems only'
error\t'Failures only'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from pause" -l log-format -d 'Log format: auto = journald when stderr is the journal, else logfmt' -r -f -a "auto\t'journald under systemd, else logfmt'
logfmt\t'`time=... level=INFO msg="..." key=value`'
json\t'One JSON object per line'
journald\t'Native journal protocol'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from pause" -l json -d 'Print the API\'s JSON instead of tables and one-line results'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from pause" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from resume" -l config -d 'The farm config' -r -F
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from resume" -l log-level -d 'Verbosity' -r -f -a "debug\t'Everything, including skipped triggers'
info\t'Normal operation'
warn\t'Problems only'
error\t'Failures only'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from resume" -l log-format -d 'Log format: auto = journald when stderr is the journal, else logfmt' -r -f -a "auto\t'journald under systemd, else logfmt'
logfmt\t'`time=... level=INFO msg="..." key=value`'
json\t'One JSON object per line'
journald\t'Native journal protocol'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from resume" -l json -d 'Print the API\'s JSON instead of tables and one-line results'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from resume" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from cancel" -l config -d 'The farm config' -r -F
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from cancel" -l log-level -d 'Verbosity' -r -f -a "debug\t'Everything, including skipped triggers'
info\t'Normal operation'
warn\t'Problems only'
error\t'Failures only'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from cancel" -l log-format -d 'Log format: auto = journald when stderr is the journal, else logfmt' -r -f -a "auto\t'journald under systemd, else logfmt'
logfmt\t'`time=... level=INFO msg="..." key=value`'
json\t'One JSON object per line'
journald\t'Native journal protocol'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from cancel" -l json -d 'Print the API\'s JSON instead of tables and one-line results'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from cancel" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from retry" -l config -d 'The farm config' -r -F
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from retry" -l log-level -d 'Verbosity' -r -f -a "debug\t'Everything, including skipped triggers'
info\t'Normal operation'
warn\t'Problems only'
error\t'Failures only'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from retry" -l log-format -d 'Log format: auto = journald when stderr is the journal, else logfmt' -r -f -a "auto\t'journald under systemd, else logfmt'
logfmt\t'`time=... level=INFO msg="..." key=value`'
json\t'One JSON object per line'
journald\t'Native journal protocol'"
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from retry" -l json -d 'Print the API\'s JSON instead of tables and one-line results'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from retry" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "status" -d 'The farm at a glance: the build in flight, the queue, failures, paused and invalid recipes (GET /status)'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "builds" -d 'Recent builds, newest first (GET /builds)'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "recipe" -d 'One recipe: paused or not, its last poll, queued versions, failures and recent builds'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "log" -d 'A build\'s log (GET /builds/ID/log)'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "watch" -d 'Follow the farm\'s events as they happen, one line per event (GET /events); Ctrl-C stops'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "poll" -d 'Poll a recipe\'s upstream now, whatever its webhook setting'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "pause" -d 'Stop polling and building a recipe until it is resumed (kept across restarts)'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "resume" -d 'Undo a pause; the recipe is polled at once'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "cancel" -d 'Cancel the build in flight: TERM to its processes, KILL after 5 s; its version backs off like a failure'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "retry" -d 'Clear a failed version\'s backoff and build it next'
complete -c farmhand -n "__fish_farmhand_using_subcommand ctl; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c farmhand -n "__fish_farmhand_using_subcommand completions" -l config -d 'The farm config' -r -F
complete -c farmhand -n "__fish_farmhand_using_subcommand completions" -l log-level -d 'Verbosity' -r -f -a "debug\t'Everything, including skipped triggers'
info\t'Normal operation'
warn\t'Problems only'
error\t'Failures only'"
complete -c farmhand -n "__fish_farmhand_using_subcommand completions" -l log-format -d 'Log format: auto = journald when stderr is the journal, else logfmt' -r -f -a "auto\t'journald under systemd, else logfmt'
logfmt\t'`time=... level=INFO msg="..." key=value`'
json\t'One JSON object per line'
journald\t'Native journal protocol'"
complete -c farmhand -n "__fish_farmhand_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c farmhand -n "__fish_farmhand_using_subcommand git-helper" -l config -d 'The farm config' -r -F
complete -c farmhand -n "__fish_farmhand_using_subcommand git-helper" -l log-level -d 'Verbosity' -r -f -a "debug\t'Everything, including skipped triggers'
info\t'Normal operation'
warn\t'Problems only'
error\t'Failures only'"
complete -c farmhand -n "__fish_farmhand_using_subcommand git-helper" -l log-format -d 'Log format: auto = journald when stderr is the journal, else logfmt' -r -f -a "auto\t'journald under systemd, else logfmt'
logfmt\t'`time=... level=INFO msg="..." key=value`'
json\t'One JSON object per line'
journald\t'Native journal protocol'"
complete -c farmhand -n "__fish_farmhand_using_subcommand git-helper" -l background -d 'Run at a lower CPU priority (polls: background work)'
complete -c farmhand -n "__fish_farmhand_using_subcommand git-helper" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c farmhand -n "__fish_farmhand_using_subcommand help; and not __fish_seen_subcommand_from demo ctl completions git-helper help" -f -a "demo" -d 'Create a self-contained demo farm and run the daemon on it'
complete -c farmhand -n "__fish_farmhand_using_subcommand help; and not __fish_seen_subcommand_from demo ctl completions git-helper help" -f -a "ctl" -d 'Act on a running farm and read its state: poll, pause, resume, cancel, retry, status, builds, logs, events'
complete -c farmhand -n "__fish_farmhand_using_subcommand help; and not __fish_seen_subcommand_from demo ctl completions git-helper help" -f -a "completions" -d 'Print a shell completion script for farmhand'
complete -c farmhand -n "__fish_farmhand_using_subcommand help; and not __fish_seen_subcommand_from demo ctl completions git-helper help" -f -a "git-helper" -d 'Internal: runs one git operation for the daemon (request on stdin, answer on stdout)'
complete -c farmhand -n "__fish_farmhand_using_subcommand help; and not __fish_seen_subcommand_from demo ctl completions git-helper help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c farmhand -n "__fish_farmhand_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "status" -d 'The farm at a glance: the build in flight, the queue, failures, paused and invalid recipes (GET /status)'
complete -c farmhand -n "__fish_farmhand_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "builds" -d 'Recent builds, newest first (GET /builds)'
complete -c farmhand -n "__fish_farmhand_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "recipe" -d 'One recipe: paused or not, its last poll, queued versions, failures and recent builds'
complete -c farmhand -n "__fish_farmhand_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "log" -d 'A build\'s log (GET /builds/ID/log)'
complete -c farmhand -n "__fish_farmhand_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "watch" -d 'Follow the farm\'s events as they happen, one line per event (GET /events); Ctrl-C stops'
complete -c farmhand -n "__fish_farmhand_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "poll" -d 'Poll a recipe\'s upstream now, whatever its webhook setting'
complete -c farmhand -n "__fish_farmhand_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "pause" -d 'Stop polling and building a recipe until it is resumed (kept across restarts)'
complete -c farmhand -n "__fish_farmhand_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "resume" -d 'Undo a pause; the recipe is polled at once'
complete -c farmhand -n "__fish_farmhand_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "cancel" -d 'Cancel the build in flight: TERM to its processes, KILL after 5 s; its version backs off like a failure'
complete -c farmhand -n "__fish_farmhand_using_subcommand help; and __fish_seen_subcommand_from ctl" -f -a "retry" -d 'Clear a failed version\'s backoff and build it next'
