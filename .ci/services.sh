#!/usr/bin/env bash
# Installs and starts the real servers the tests talk to: Postfix on loopback delivering
# to a local Maildir (and bouncing mail for unknown local users by mail, as a relay does),
# and PostgreSQL with a test database; installs the DKIM test tools (Perl's Mail::DKIM, and
# dnsmasq, which the tests start themselves on a high port) and Dovecot's IMAP server,
# which the bounce tests start themselves on a high port; installs SpamAssassin and starts
# rspamd, which score a rendered issue; installs nginx and Caddy, which the proxy tests start
# themselves on high ports.
# Idempotent; needs root.
set -euo pipefail

packages=()
command -v postconf >/dev/null || packages+=(postfix)
[ -x /usr/sbin/smtp-sink ] || packages+=(postfix)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || packages+=(postgresql)
perl -MMail::DKIM::Verifier -e1 2>/dev/null || packages+=(libmail-dkim-perl)
# dnsmasq-base is the binary alone: the dnsmasq package would also start a system DNS
# service on port 53, which nothing here needs.
[ -x /usr/sbin/dnsmasq ] || packages+=(dnsmasq-base)
[ -x /usr/sbin/dovecot ] || packages+=(dovecot-imapd)
# The spam filters an issue is scored by: SpamAssassin 4 (its default rules, local tests
# only) and rspamd.
command -v spamassassin >/dev/null || packages+=(spamassassin)
command -v rspamd >/dev/null || packages+=(rspamd)
if [ ${#packages[@]} -gt 0 ]; then
    apt-get update -qq
    echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections
    echo "postfix postfix/mailname string localhost" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi

# nginx and Caddy for tests/test_proxy.py. Their packages would start system services on
# ports 80 and 443, which nothing here needs: a policy-rc.d refuses every service start for
# the time of the install (one already in place, as in containers, is left as it is).
proxies=()
[ -x /usr/sbin/nginx ] || proxies+=(nginx)
[ -x /usr/bin/caddy ] || proxies+=(caddy)
if [ ${#proxies[@]} -gt 0 ]; then
    made_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${proxies[@]}" >/dev/null
    if [ -n "$made_policy" ]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
fi

# Postfix: accept mail on 127.0.0.1:25 for local users and deliver into ~/Maildir/.
# newsletter-bounces is the bounce mailbox: with recipient_delimiter, the VERP addresses
# newsletter-bounces+TOKEN@localhost land in its Maildir. An empty local_recipient_maps
# accepts any local address and bounces the unknown ones afterwards, by mail (a DSN), as
# relays do: the bounce tests depend on it.
id newsletter-test >/dev/null 2>&1 || useradd --create-home --shell /usr/sbin/nologin newsletter-test
id newsletter-bounces >/dev/null 2>&1 || useradd --create-home --shell /usr/sbin/nologin newsletter-bounces
postconf -e \
    "recipient_delimiter = +" \
    "local_recipient_maps =" \
    "inet_interfaces = loopback-only" \
    "inet_protocols = ipv4" \
    "myhostname = localhost" \
    "mydestination = localhost, localhost.localdomain" \
    "mynetworks = 127.0.0.0/8" \
    "home_mailbox = Maildir/" \
    "mailbox_command =" \
    "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination" \
    "compatibility_level = 3.6"
newaliases
if postfix status >/dev/null 2>&1; then postfix reload >/dev/null 2>&1; else postfix start >/dev/null 2>&1; fi
# The packaged Dovecot service is not wanted (the tests start their own on a free port).
if command -v doveadm >/dev/null && doveadm service status >/dev/null 2>&1; then doveadm stop >/dev/null 2>&1 || true; fi

# SpamAssassin: an sa-update that failed (no network) leaves an empty rules folder, which
# SpamAssassin would prefer to its default rules, and then find no rule at all.
for dir in /var/lib/spamassassin/*/updates_spamassassin_org; do
    [ -d "$dir" ] && [ -z "$(ls -A "$dir")" ] && rm -rf "$(dirname "$dir")"
done
# rspamd: its normal worker on 127.0.0.1:11333, with the packaged configuration.
mkdir -p /run/rspamd && chown _rspamd:_rspamd /run/rspamd
if ! pgrep -x rspamd >/dev/null; then
    rspamd -u _rspamd -g _rspamd >/dev/null
fi
for _ in $(seq 1 60); do
    rspamc -h 127.0.0.1:11333 stat >/dev/null 2>&1 && break
    (exec 3<>/dev/tcp/127.0.0.1/11333) 2>/dev/null && break
    sleep 1
done

# PostgreSQL: a cluster on 127.0.0.1:5432 with a role and database for the tests.
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | grep -q " main "; then
    pg_createcluster "$version" main >/dev/null
fi
pg_ctlcluster "$version" main start 2>/dev/null || true
for _ in $(seq 1 30); do
    su postgres -c "psql -qAtc 'select 1'" >/dev/null 2>&1 && break
    sleep 1
done
su postgres -c "psql -qAtc \"select 1 from pg_roles where rolname='newsletter'\"" | grep -q 1 ||
    su postgres -c "psql -qc \"create role newsletter login password 'newsletter'\""
su postgres -c "psql -qAtc \"select 1 from pg_database where datname='newsletter_test'\"" | grep -q 1 ||
    su postgres -c "createdb -O newsletter newsletter_test"
echo "services ready: postfix on 127.0.0.1:25, postgresql on 127.0.0.1:5432, rspamd on 127.0.0.1:11333; mail-dkim, dnsmasq, dovecot, spamassassin, nginx, caddy installed"
