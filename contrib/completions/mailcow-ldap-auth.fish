# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_mailcow_ldap_auth_global_optspecs
    string join \n config= h/help V/version
end

function __fish_mailcow_ldap_auth_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_mailcow_ldap_auth_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_mailcow_ldap_auth_using_subcommand
    set -l cmd (__fish_mailcow_ldap_auth_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_needs_command" -l config -d 'Configuration file (YAML)' -r -F
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_needs_command" -s h -l help -d 'Print help'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_needs_command" -s V -l version -d 'Print version'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_needs_command" -f -a "checkpassword" -d 'Answer one Dovecot checkpassword request (what Dovecot runs; not for shells).'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_needs_command" -f -a "dovecot-lua" -d 'Answer one request of Dovecot\'s Lua passdb/userdb (what the shipped Lua script runs).'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_needs_command" -f -a "serve" -d 'Answer logins over HTTP as a long-running service with pooled connections (for the Lua script\'s `url` transport).'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_needs_command" -f -a "login" -d 'Try a login from a shell, exactly as Dovecot\'s would run (provisioning included)'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_needs_command" -f -a "test-connection" -d 'Check the configuration, every LDAP host, the base DN, the database and the templates'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_needs_command" -f -a "authsource" -d 'Switch mailboxes between mailcow\'s own passwords and LDAP (mailbox.authsource).'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_needs_command" -f -a "sync" -d 'Import LDAP users and re-apply changed templates (run by cron or a systemd timer).'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_needs_command" -f -a "completions" -d 'Print a shell completion script to standard output.'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand checkpassword" -l config -d 'Configuration file (YAML)' -r -F
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand checkpassword" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand checkpassword" -s V -l version -d 'Print version'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and not __fish_seen_subcommand_from verify lookup help" -l config -d 'Configuration file (YAML)' -r -F
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and not __fish_seen_subcommand_from verify lookup help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and not __fish_seen_subcommand_from verify lookup help" -s V -l version -d 'Print version'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and not __fish_seen_subcommand_from verify lookup help" -f -a "verify" -d 'Check a password (passdb): the password is read from standard input up to its end, byte for byte (no newline is stripped)'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and not __fish_seen_subcommand_from verify lookup help" -f -a "lookup" -d 'Look a mailbox up without a password (userdb): no LDAP traffic'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and not __fish_seen_subcommand_from verify lookup help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and __fish_seen_subcommand_from verify" -l service -d 'Dovecot\'s service or protocol (imap, pop3, lmtp, …)' -r
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and __fish_seen_subcommand_from verify" -l remote-ip -d 'The client\'s IP (the log line, and `sasl_log` on success)' -r
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and __fish_seen_subcommand_from verify" -l dovecot -d 'The Dovecot that reads the reply: selects the userdb field names (quota)' -r -f -a "2.3\t''
2.4\t''"
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and __fish_seen_subcommand_from verify" -l reply-file -d 'An existing file (the script\'s `os.tmpname()`) the reply is written to; standard output when not given. The file is never created' -r -F
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and __fish_seen_subcommand_from verify" -l config -d 'Configuration file (YAML)' -r -F
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and __fish_seen_subcommand_from verify" -s V -l version -d 'Print version'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and __fish_seen_subcommand_from lookup" -l service -d 'Dovecot\'s service or protocol (imap, pop3, lmtp, …)' -r
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and __fish_seen_subcommand_from lookup" -l remote-ip -d 'The client\'s IP (the log line, and `sasl_log` on success)' -r
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and __fish_seen_subcommand_from lookup" -l dovecot -d 'The Dovecot that reads the reply: selects the userdb field names (quota)' -r -f -a "2.3\t''
2.4\t''"
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and __fish_seen_subcommand_from lookup" -l reply-file -d 'An existing file (the script\'s `os.tmpname()`) the reply is written to; standard output when not given. The file is never created' -r -F
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and __fish_seen_subcommand_from lookup" -l config -d 'Configuration file (YAML)' -r -F
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and __fish_seen_subcommand_from lookup" -s h -l help -d 'Print help'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and __fish_seen_subcommand_from lookup" -s V -l version -d 'Print version'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and __fish_seen_subcommand_from help" -f -a "verify" -d 'Check a password (passdb): the password is read from standard input up to its end, byte for byte (no newline is stripped)'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and __fish_seen_subcommand_from help" -f -a "lookup" -d 'Look a mailbox up without a password (userdb): no LDAP traffic'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand dovecot-lua; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand serve" -l config -d 'Configuration file (YAML)' -r -F
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand serve" -s V -l version -d 'Print version'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand login" -l service -d 'The Dovecot service to check access for (imap, pop3, sieve, smtp, …)' -r
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand login" -l config -d 'Configuration file (YAML)' -r -F
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand login" -l dry-run -d 'Run the whole login (mailbox checks, app passwords, LDAP search and bind) and print each step and what provisioning would write (template, rows, limits), writing nothing: no mailbox, no side rows, no sasl_log, no Redis. Exit codes as without'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand login" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand login" -s V -l version -d 'Print version'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand test-connection" -l user -d 'Also look this login up: its LDAP entry, the template it maps to, and whether a first login could create its mailbox (no bind as the user, nothing written)' -r
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand test-connection" -l config -d 'Configuration file (YAML)' -r -F
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand test-connection" -l json -d 'Print one JSON object instead of lines (for monitoring): "result" (ok, warn, fail), "checks" (name, status, detail, duration_ms each), "user" (with --user: the entry, its mapping and what the next login would do). Exit codes unchanged'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand test-connection" -s h -l help -d 'Print help'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand test-connection" -s V -l version -d 'Print version'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand authsource" -l config -d 'Configuration file (YAML)' -r -F
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand authsource" -l dry-run -d 'Print what would be switched or refused, and write nothing'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand authsource" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand authsource" -s V -l version -d 'Print version'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand sync" -l state-dir -d 'Directory for the lock file and the time of the last completed run (created 0700)' -r -f -a "(__fish_complete_directories)"
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand sync" -l config -d 'Configuration file (YAML)' -r -F
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand sync" -l dry-run -d 'Print what would be created or re-applied and write nothing (no database writes, no lock, no state; the interval is not checked)'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand sync" -l force -d 'Run even if the last completed run is less than sync.interval_minutes ago'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand sync" -l json -d 'Print the summary as one JSON object on standard output (dry-run lines go to standard error then)'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand sync" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand sync" -s V -l version -d 'Print version'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand completions" -l config -d 'Configuration file (YAML)' -r -F
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand completions" -s V -l version -d 'Print version'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand help; and not __fish_seen_subcommand_from checkpassword dovecot-lua serve login test-connection authsource sync completions help" -f -a "checkpassword" -d 'Answer one Dovecot checkpassword request (what Dovecot runs; not for shells).'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand help; and not __fish_seen_subcommand_from checkpassword dovecot-lua serve login test-connection authsource sync completions help" -f -a "dovecot-lua" -d 'Answer one request of Dovecot\'s Lua passdb/userdb (what the shipped Lua script runs).'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand help; and not __fish_seen_subcommand_from checkpassword dovecot-lua serve login test-connection authsource sync completions help" -f -a "serve" -d 'Answer logins over HTTP as a long-running service with pooled connections (for the Lua script\'s `url` transport).'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand help; and not __fish_seen_subcommand_from checkpassword dovecot-lua serve login test-connection authsource sync completions help" -f -a "login" -d 'Try a login from a shell, exactly as Dovecot\'s would run (provisioning included)'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand help; and not __fish_seen_subcommand_from checkpassword dovecot-lua serve login test-connection authsource sync completions help" -f -a "test-connection" -d 'Check the configuration, every LDAP host, the base DN, the database and the templates'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand help; and not __fish_seen_subcommand_from checkpassword dovecot-lua serve login test-connection authsource sync completions help" -f -a "authsource" -d 'Switch mailboxes between mailcow\'s own passwords and LDAP (mailbox.authsource).'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand help; and not __fish_seen_subcommand_from checkpassword dovecot-lua serve login test-connection authsource sync completions help" -f -a "sync" -d 'Import LDAP users and re-apply changed templates (run by cron or a systemd timer).'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand help; and not __fish_seen_subcommand_from checkpassword dovecot-lua serve login test-connection authsource sync completions help" -f -a "completions" -d 'Print a shell completion script to standard output.'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand help; and not __fish_seen_subcommand_from checkpassword dovecot-lua serve login test-connection authsource sync completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand help; and __fish_seen_subcommand_from dovecot-lua" -f -a "verify" -d 'Check a password (passdb): the password is read from standard input up to its end, byte for byte (no newline is stripped)'
complete -c mailcow-ldap-auth -n "__fish_mailcow_ldap_auth_using_subcommand help; and __fish_seen_subcommand_from dovecot-lua" -f -a "lookup" -d 'Look a mailbox up without a password (userdb): no LDAP traffic'
