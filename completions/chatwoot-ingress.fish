# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_chatwoot_ingress_global_optspecs
    string join \n config= url= password-file= timeout= max-size= ca-file= reject-dir= recipient-header= mta= recipient= dry-run v/verbose h/help V/version
end

function __fish_chatwoot_ingress_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_chatwoot_ingress_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_chatwoot_ingress_using_subcommand
    set -l cmd (__fish_chatwoot_ingress_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -l config -d 'Configuration file (TOML) [default: $CHATWOOT_INGRESS_CONFIG, then the user config dir, then /etc/chatwoot-ingress/config.toml]' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -l url -d 'Chatwoot\'s base URL, or the full relay ingress URL [env: CHATWOOT_INGRESS_URL above the file; URL, the rake task\'s name, below it]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -l password-file -d 'File whose first line is the ingress password (there is no --password: command lines are visible to every user). The environment may instead carry the password itself: CHATWOOT_INGRESS_PASSWORD (above the file), or INGRESS_PASSWORD (below it)' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -l timeout -d 'Give up after this many seconds in all, retries included [default: 30]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -l max-size -d 'Refuse larger messages permanently (bytes; K, M, G suffixes are binary) [default: 64M]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -l ca-file -d 'Trust the PEM certificates in this file in addition to the system\'s: as authorities, or as the server\'s own (self-signed) certificate' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -l reject-dir -d 'Keep a copy of every permanently refused message here (fsync\'d, with its reason beside it)' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -l recipient-header -d 'Take the envelope recipient from the topmost (newest) instance of this header, e.g. Delivered-To, when no --recipient is given: for catch-all mailboxes fetched by getmail, fetchmail or import' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -l mta -d 'The program that runs this one; it decides the exit codes (for check: which user\'s access to test and which of its limits to check)' -r -f -a "sysexits\t'sysexits(3): 0, 75 (temporary), 65 (permanent)'
postfix\t''
exim\t''
qmail\t''
opensmtpd\t''
getmail\t''
fetchmail\t''"
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -l recipient -d 'The envelope recipient: the message is given exactly one X-Original-To, this address, so Chatwoot can route mail that reached the inbox by BCC or forwarding (earlier ones are kept as X-Previous-Original-To)' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -l dry-run -d 'Check the message and show what would be sent; send nothing'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -s v -l verbose -d 'Also report success on stdout, as a line beginning with 2.0.0, and where the URL and the password came from'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -s V -l version -d 'Print version'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -f -a "check" -d 'Check the setup step by step and say what to fix; deliver nothing'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -f -a "import" -d 'Relay mbox files, Maildir folders and .eml files in bulk: concurrent, resumable, with progress and a summary'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -f -a "watch" -d 'Fetch mail from IMAP mailboxes and relay it, as a service'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -f -a "oauth2" -d 'OAuth2 for [[mailbox]] tables: sign in once, so that watch logs in with tokens from then on'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -f -a "health" -d 'Ask a running watch whether it is alive, for a container\'s HEALTHCHECK'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand check" -l user -d 'Also check that this user can read the configuration file, the password file and ca_file, and run this program [default with any --mta but sysexits: chatwoot-ingress, the account our packaged caller configs run it as]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand check" -l send-test -d 'When every step is right, also deliver a generated test message to ADDR, an address that reaches a Chatwoot inbox, to prove routing end to end. Unlike the probe, it is stored: it appears in the inbox' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand check" -l chatwoot-env -d 'Also check Chatwoot\'s side from its environment: FILE is Chatwoot\'s .env, KEY=value lines exported from its Kubernetes Secret, or a process\'s /proc/PID/environ. ✗ when RAILS_INBOUND_EMAIL_SERVICE is not relay (the relay ingress answers 404), MAILER_INBOUND_EMAIL_DOMAIN is unset (addresses end in @false) or RAILS_INBOUND_EMAIL_PASSWORD is not ours (neither is printed); it also compares FRONTEND_URL with our url, and warns that Google ends the refresh tokens of a consent screen left in Testing after 7 days' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand check" -l config -d 'Configuration file (TOML) [default: $CHATWOOT_INGRESS_CONFIG, then the user config dir, then /etc/chatwoot-ingress/config.toml]' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand check" -l url -d 'Chatwoot\'s base URL, or the full relay ingress URL [env: CHATWOOT_INGRESS_URL above the file; URL, the rake task\'s name, below it]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand check" -l password-file -d 'File whose first line is the ingress password (there is no --password: command lines are visible to every user). The environment may instead carry the password itself: CHATWOOT_INGRESS_PASSWORD (above the file), or INGRESS_PASSWORD (below it)' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand check" -l timeout -d 'Give up after this many seconds in all, retries included [default: 30]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand check" -l max-size -d 'Refuse larger messages permanently (bytes; K, M, G suffixes are binary) [default: 64M]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand check" -l ca-file -d 'Trust the PEM certificates in this file in addition to the system\'s: as authorities, or as the server\'s own (self-signed) certificate' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand check" -l reject-dir -d 'Keep a copy of every permanently refused message here (fsync\'d, with its reason beside it)' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand check" -l recipient-header -d 'Take the envelope recipient from the topmost (newest) instance of this header, e.g. Delivered-To, when no --recipient is given: for catch-all mailboxes fetched by getmail, fetchmail or import' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand check" -l mta -d 'The program that runs this one; it decides the exit codes (for check: which user\'s access to test and which of its limits to check)' -r -f -a "sysexits\t'sysexits(3): 0, 75 (temporary), 65 (permanent)'
postfix\t''
exim\t''
qmail\t''
opensmtpd\t''
getmail\t''
fetchmail\t''"
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand check" -l json -d 'Print the steps as one JSON document, for scripts and monitoring (the password is never included)'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand check" -l size-limit -d 'Also find whether a proxy in front of Chatwoot refuses messages of max_size: after a right probe, a text/plain body of exactly that size is sent, which the ingress refuses (415) without storing it if it gets through, and a proxy\'s lower limit answers 413'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand import" -s j -l jobs -d 'Requests in flight at once, over one pool of keep-alive connections' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand import" -l journal -d 'The record of what was delivered, and of what was refused and saved in the reject folder (the SHA-256 of the bytes, one per line): messages in it are skipped, so running the same command again after a failure, a crash or Ctrl-C delivers only the rest, and saves no refusal twice. Delete it to send everything again [default: one per ingress URL in $XDG_STATE_HOME/chatwoot-ingress/, else ~/.local/state/chatwoot-ingress/, named HOST-HASH.journal]' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand import" -l recipient -d 'The envelope recipient of every message: each gets exactly one X-Original-To, this address' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand import" -l config -d 'Configuration file (TOML) [default: $CHATWOOT_INGRESS_CONFIG, then the user config dir, then /etc/chatwoot-ingress/config.toml]' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand import" -l url -d 'Chatwoot\'s base URL, or the full relay ingress URL [env: CHATWOOT_INGRESS_URL above the file; URL, the rake task\'s name, below it]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand import" -l password-file -d 'File whose first line is the ingress password (there is no --password: command lines are visible to every user). The environment may instead carry the password itself: CHATWOOT_INGRESS_PASSWORD (above the file), or INGRESS_PASSWORD (below it)' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand import" -l timeout -d 'Give up after this many seconds in all, retries included [default: 30]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand import" -l max-size -d 'Refuse larger messages permanently (bytes; K, M, G suffixes are binary) [default: 64M]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand import" -l ca-file -d 'Trust the PEM certificates in this file in addition to the system\'s: as authorities, or as the server\'s own (self-signed) certificate' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand import" -l reject-dir -d 'Keep a copy of every permanently refused message here (fsync\'d, with its reason beside it)' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand import" -l recipient-header -d 'Take the envelope recipient from the topmost (newest) instance of this header, e.g. Delivered-To, when no --recipient is given: for catch-all mailboxes fetched by getmail, fetchmail or import' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand import" -l mta -d 'The program that runs this one; it decides the exit codes (for check: which user\'s access to test and which of its limits to check)' -r -f -a "sysexits\t'sysexits(3): 0, 75 (temporary), 65 (permanent)'
postfix\t''
exim\t''
qmail\t''
opensmtpd\t''
getmail\t''
fetchmail\t''"
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand import" -l mboxo -d 'Read mbox files as mboxo: unquote only ">From " lines. The default, mboxrd, turns ">From " into "From " and ">>From " into ">From "'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand import" -l mark-seen -d 'Maildir: move each delivered message to cur/ and flag it seen (S), so that new/ holds only mail still to import'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand import" -l subfolders -d 'Maildir: also import the Maildir++ subfolders (.Sent/, .Archive/…), which are otherwise skipped and named'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand import" -l dry-run -d 'Read, split and check everything and say on stderr what would be sent, and what refused; send nothing, write no journal, save no refusal and mark nothing seen. The journal is read: what it holds is skipped, as a real run would'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand import" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand watch" -l mailbox -d 'Watch only this mailbox (its `name`); may be given more than once' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand watch" -l log-format -d 'How each line of the log is written: text, or one JSON object per line (time, level, event, mailbox, folder, uid, message_id, bytes, status, ms, error, fix, message) for container log pipelines' -r -f -a "text\t''
json\t''"
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand watch" -l metrics-listen -d 'Serve Prometheus metrics (GET /metrics) and health (GET /healthz/live, /healthz/ready) over plain HTTP on this address, e.g. 127.0.0.1:9898. An address that is not loopback is refused unless [metrics] says allow_remote = true' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand watch" -l config -d 'Configuration file (TOML) [default: $CHATWOOT_INGRESS_CONFIG, then the user config dir, then /etc/chatwoot-ingress/config.toml]' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand watch" -l url -d 'Chatwoot\'s base URL, or the full relay ingress URL [env: CHATWOOT_INGRESS_URL above the file; URL, the rake task\'s name, below it]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand watch" -l password-file -d 'File whose first line is the ingress password (there is no --password: command lines are visible to every user). The environment may instead carry the password itself: CHATWOOT_INGRESS_PASSWORD (above the file), or INGRESS_PASSWORD (below it)' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand watch" -l timeout -d 'Give up after this many seconds in all, retries included [default: 30]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand watch" -l max-size -d 'Refuse larger messages permanently (bytes; K, M, G suffixes are binary) [default: 64M]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand watch" -l ca-file -d 'Trust the PEM certificates in this file in addition to the system\'s: as authorities, or as the server\'s own (self-signed) certificate' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand watch" -l reject-dir -d 'Keep a copy of every permanently refused message here (fsync\'d, with its reason beside it)' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand watch" -l recipient-header -d 'Take the envelope recipient from the topmost (newest) instance of this header, e.g. Delivered-To, when no --recipient is given: for catch-all mailboxes fetched by getmail, fetchmail or import' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand watch" -l mta -d 'The program that runs this one; it decides the exit codes (for check: which user\'s access to test and which of its limits to check)' -r -f -a "sysexits\t'sysexits(3): 0, 75 (temporary), 65 (permanent)'
postfix\t''
exim\t''
qmail\t''
opensmtpd\t''
getmail\t''
fetchmail\t''"
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand watch" -l once -d 'Deliver what is waiting now, then exit: 0 when nothing is left for later, 75 when something is (for cron)'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand watch" -l status -d 'Cluster mode ([cluster]): print the replicas and the mailboxes each holds, from Redis, and exit: 0 when every mailbox is held, 1 when some is not, 75 when Redis cannot be asked'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand watch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and not __fish_seen_subcommand_from authorize help" -l config -d 'Configuration file (TOML) [default: $CHATWOOT_INGRESS_CONFIG, then the user config dir, then /etc/chatwoot-ingress/config.toml]' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and not __fish_seen_subcommand_from authorize help" -l url -d 'Chatwoot\'s base URL, or the full relay ingress URL [env: CHATWOOT_INGRESS_URL above the file; URL, the rake task\'s name, below it]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and not __fish_seen_subcommand_from authorize help" -l password-file -d 'File whose first line is the ingress password (there is no --password: command lines are visible to every user). The environment may instead carry the password itself: CHATWOOT_INGRESS_PASSWORD (above the file), or INGRESS_PASSWORD (below it)' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and not __fish_seen_subcommand_from authorize help" -l timeout -d 'Give up after this many seconds in all, retries included [default: 30]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and not __fish_seen_subcommand_from authorize help" -l max-size -d 'Refuse larger messages permanently (bytes; K, M, G suffixes are binary) [default: 64M]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and not __fish_seen_subcommand_from authorize help" -l ca-file -d 'Trust the PEM certificates in this file in addition to the system\'s: as authorities, or as the server\'s own (self-signed) certificate' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and not __fish_seen_subcommand_from authorize help" -l reject-dir -d 'Keep a copy of every permanently refused message here (fsync\'d, with its reason beside it)' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and not __fish_seen_subcommand_from authorize help" -l recipient-header -d 'Take the envelope recipient from the topmost (newest) instance of this header, e.g. Delivered-To, when no --recipient is given: for catch-all mailboxes fetched by getmail, fetchmail or import' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and not __fish_seen_subcommand_from authorize help" -l mta -d 'The program that runs this one; it decides the exit codes (for check: which user\'s access to test and which of its limits to check)' -r -f -a "sysexits\t'sysexits(3): 0, 75 (temporary), 65 (permanent)'
postfix\t''
exim\t''
qmail\t''
opensmtpd\t''
getmail\t''
fetchmail\t''"
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and not __fish_seen_subcommand_from authorize help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and not __fish_seen_subcommand_from authorize help" -f -a "authorize" -d 'Sign in as a mailbox\'s user and write its refresh_token_file'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and not __fish_seen_subcommand_from authorize help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and __fish_seen_subcommand_from authorize" -l mailbox -d 'The mailbox: its `name` in the configuration file' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and __fish_seen_subcommand_from authorize" -l config -d 'Configuration file (TOML) [default: $CHATWOOT_INGRESS_CONFIG, then the user config dir, then /etc/chatwoot-ingress/config.toml]' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and __fish_seen_subcommand_from authorize" -l url -d 'Chatwoot\'s base URL, or the full relay ingress URL [env: CHATWOOT_INGRESS_URL above the file; URL, the rake task\'s name, below it]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and __fish_seen_subcommand_from authorize" -l password-file -d 'File whose first line is the ingress password (there is no --password: command lines are visible to every user). The environment may instead carry the password itself: CHATWOOT_INGRESS_PASSWORD (above the file), or INGRESS_PASSWORD (below it)' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and __fish_seen_subcommand_from authorize" -l timeout -d 'Give up after this many seconds in all, retries included [default: 30]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and __fish_seen_subcommand_from authorize" -l max-size -d 'Refuse larger messages permanently (bytes; K, M, G suffixes are binary) [default: 64M]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and __fish_seen_subcommand_from authorize" -l ca-file -d 'Trust the PEM certificates in this file in addition to the system\'s: as authorities, or as the server\'s own (self-signed) certificate' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and __fish_seen_subcommand_from authorize" -l reject-dir -d 'Keep a copy of every permanently refused message here (fsync\'d, with its reason beside it)' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and __fish_seen_subcommand_from authorize" -l recipient-header -d 'Take the envelope recipient from the topmost (newest) instance of this header, e.g. Delivered-To, when no --recipient is given: for catch-all mailboxes fetched by getmail, fetchmail or import' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and __fish_seen_subcommand_from authorize" -l mta -d 'The program that runs this one; it decides the exit codes (for check: which user\'s access to test and which of its limits to check)' -r -f -a "sysexits\t'sysexits(3): 0, 75 (temporary), 65 (permanent)'
postfix\t''
exim\t''
qmail\t''
opensmtpd\t''
getmail\t''
fetchmail\t''"
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and __fish_seen_subcommand_from authorize" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and __fish_seen_subcommand_from help" -f -a "authorize" -d 'Sign in as a mailbox\'s user and write its refresh_token_file'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand oauth2; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand health" -l metrics-listen -d 'The address watch serves its metrics on, as given to watch --metrics-listen; one on every address (0.0.0.0, [::]) is asked on loopback' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand health" -l metrics-url -d 'Ask this http:// URL instead, e.g. http://127.0.0.1:9898/healthz/ready for readiness' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand health" -l config -d 'Configuration file (TOML) [default: $CHATWOOT_INGRESS_CONFIG, then the user config dir, then /etc/chatwoot-ingress/config.toml]' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand health" -l url -d 'Chatwoot\'s base URL, or the full relay ingress URL [env: CHATWOOT_INGRESS_URL above the file; URL, the rake task\'s name, below it]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand health" -l password-file -d 'File whose first line is the ingress password (there is no --password: command lines are visible to every user). The environment may instead carry the password itself: CHATWOOT_INGRESS_PASSWORD (above the file), or INGRESS_PASSWORD (below it)' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand health" -l timeout -d 'Give up after this many seconds in all, retries included [default: 30]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand health" -l max-size -d 'Refuse larger messages permanently (bytes; K, M, G suffixes are binary) [default: 64M]' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand health" -l ca-file -d 'Trust the PEM certificates in this file in addition to the system\'s: as authorities, or as the server\'s own (self-signed) certificate' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand health" -l reject-dir -d 'Keep a copy of every permanently refused message here (fsync\'d, with its reason beside it)' -r -F
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand health" -l recipient-header -d 'Take the envelope recipient from the topmost (newest) instance of this header, e.g. Delivered-To, when no --recipient is given: for catch-all mailboxes fetched by getmail, fetchmail or import' -r
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand health" -l mta -d 'The program that runs this one; it decides the exit codes (for check: which user\'s access to test and which of its limits to check)' -r -f -a "sysexits\t'sysexits(3): 0, 75 (temporary), 65 (permanent)'
postfix\t''
exim\t''
qmail\t''
opensmtpd\t''
getmail\t''
fetchmail\t''"
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand health" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand help; and not __fish_seen_subcommand_from check import watch oauth2 health help" -f -a "check" -d 'Check the setup step by step and say what to fix; deliver nothing'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand help; and not __fish_seen_subcommand_from check import watch oauth2 health help" -f -a "import" -d 'Relay mbox files, Maildir folders and .eml files in bulk: concurrent, resumable, with progress and a summary'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand help; and not __fish_seen_subcommand_from check import watch oauth2 health help" -f -a "watch" -d 'Fetch mail from IMAP mailboxes and relay it, as a service'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand help; and not __fish_seen_subcommand_from check import watch oauth2 health help" -f -a "oauth2" -d 'OAuth2 for [[mailbox]] tables: sign in once, so that watch logs in with tokens from then on'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand help; and not __fish_seen_subcommand_from check import watch oauth2 health help" -f -a "health" -d 'Ask a running watch whether it is alive, for a container\'s HEALTHCHECK'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand help; and not __fish_seen_subcommand_from check import watch oauth2 health help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chatwoot-ingress -n "__fish_chatwoot_ingress_using_subcommand help; and __fish_seen_subcommand_from oauth2" -f -a "authorize" -d 'Sign in as a mailbox\'s user and write its refresh_token_file'
