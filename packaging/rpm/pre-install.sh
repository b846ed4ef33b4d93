# chatwoot-ingress: the account mail systems run it as, which owns the group
# of /etc/chatwoot-ingress/config.toml (root:chatwoot-ingress 0640).
getent group chatwoot-ingress >/dev/null || groupadd --system chatwoot-ingress
getent passwd chatwoot-ingress >/dev/null || \
    useradd --system --gid chatwoot-ingress --home-dir /var/lib/chatwoot-ingress \
        --create-home --shell /sbin/nologin --comment "chatwoot-ingress mail relay" chatwoot-ingress
exit 0
