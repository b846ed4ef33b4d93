complete -c chatwoot-ingress -l config -d 'Configuration file (TOML) [default: $CHATWOOT_INGRESS_CONFIG, then the user config dir, then /etc/chatwoot-ingress/config.toml]' -r -F
complete -c chatwoot-ingress -l url -d 'Chatwoot\'s base URL, or the full relay ingress URL [env: CHATWOOT_INGRESS_URL, URL]' -r
complete -c chatwoot-ingress -l password-file -d 'File whose first line is the ingress password (there is no --password: command lines are visible to every user) [env: CHATWOOT_INGRESS_PASSWORD, INGRESS_PASSWORD]' -r -F
complete -c chatwoot-ingress -l timeout -d 'Give up after this many seconds in all, retries included [default: 30]' -r
complete -c chatwoot-ingress -l max-size -d 'Refuse larger messages permanently (bytes; K, M, G suffixes are binary) [default: 64M]' -r
complete -c chatwoot-ingress -l ca-file -d 'Trust this PEM certificate authority in addition to the system\'s' -r -F
complete -c chatwoot-ingress -l reject-dir -d 'Keep a copy of every permanently refused message here (fsync\'d, with its reason beside it)' -r -F
complete -c chatwoot-ingress -l mta -d 'The program that runs this one; it decides the exit codes' -r -f -a "sysexits\t'sysexits(3): 0, 75 (temporary), 65 (permanent)'
postfix\t''
exim\t''
qmail\t''
opensmtpd\t''
getmail\t''
fetchmail\t''"
complete -c chatwoot-ingress -l recipient -d 'The envelope recipient; added as X-Original-To when the message has none, so Chatwoot can route mail that reached the inbox by BCC or forwarding' -r
complete -c chatwoot-ingress -l dry-run -d 'Check the message and show what would be sent; send nothing'
complete -c chatwoot-ingress -s v -l verbose -d 'Also report success on stdout, as a line beginning with 2.0.0'
complete -c chatwoot-ingress -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chatwoot-ingress -s V -l version -d 'Print version'
