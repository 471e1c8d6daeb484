#!/bin/sh
# codebrowse guest agent (Linux). Runs in the session VM at boot (codebrowse-agent.service), waits
# until the VM is claimed, then does what the session's manifest says: hostname, address, user,
# sudo, ssh, and the packages in order, reporting each to the portal's agent API:
#   GET  $PORTAL/agent/v1/manifest         204 while unclaimed (poll), 200 the manifest
#   GET  $PORTAL/agent/v1/packages/<i>     a package's bytes (the manifest's "download")
#   POST $PORTAL/agent/v1/report           {"package":i,"installed":b,"exitCode":n,"message":"..."}
#   POST $PORTAL/agent/v1/done             {"installed":b,"message":"..."}
#   POST $PORTAL/agent/v1/result           a test run's result (manifest "mode": "Run"): the script
#                                          in "run.script" runs once every package is installed
# Needs: POSIX sh, awk, coreutils, curl or wget; the tools of each step where it runs.
# Safe to run again: what is done is remembered under $CODEBROWSE_STATE_DIR and not done twice.
#
# Configuration (environment first, then $CODEBROWSE_CONFIG, then a NoCloud "cidata" disk):
#   CODEBROWSE_PORTAL_URL (or CODEBROWSE_PORTAL)     the portal's base URL
#   CODEBROWSE_AGENT_TOKEN (or CODEBROWSE_TOKEN)     this VM's bearer token
#   CODEBROWSE_CONFIG        /etc/codebrowse/agent.env
#   CODEBROWSE_STATE_DIR     /var/lib/codebrowse-agent
#   CODEBROWSE_LOG           /var/log/codebrowse-agent.log
#   CODEBROWSE_POLL_SECONDS  1       CODEBROWSE_MAX_POLLS 0 (forever; tests set a limit)
#   CODEBROWSE_INTERFACE     the interface for the session address (default: the default route's)
#   CODEBROWSE_MAC           this VM's MAC address: a VM restored from a memory snapshot still has
#                            the snapshot's; the agent sets this one on the NIC that has the other
#                            and renews its DHCP lease before it talks to the portal
#   CODEBROWSE_PREFIX_LENGTH prefix for an address given without one (default 32 / 128)
#   CODEBROWSE_SET_CLOCK     1: set the clock from the portal's Date header when off by > 5 s
#   CODEBROWSE_HTTP          curl | wget (default: whichever exists, curl first)
#   CODEBROWSE_RUN_OUTPUT_MAX bytes of a test run's output sent to the portal (921600; more: the
#                            first 64 KiB and the tail)
#   CODEBROWSE_ARCHIVE_MAX_ENTRIES / _MAX_BYTES / _MAX_RATIO, CODEBROWSE_INSTALL_TIMEOUT: see
#   install-rules.sh
set -u
umask 022
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

AGENT_LIB=${CODEBROWSE_AGENT_LIB:-$(cd "$(dirname "$0")" && pwd)}
# shellcheck source=vm-images/agent/json.sh
. "$AGENT_LIB/json.sh"
# shellcheck source=vm-images/agent/install-rules.sh
. "$AGENT_LIB/install-rules.sh"

CONFIG=${CODEBROWSE_CONFIG:-/etc/codebrowse/agent.env}
STATE_ROOT=${CODEBROWSE_STATE_DIR:-/var/lib/codebrowse-agent}
LOG=${CODEBROWSE_LOG:-/var/log/codebrowse-agent.log}
# The token, the manifest (it may hold the password) and HTTP leftovers: root only.
PRIV="$STATE_ROOT/private"
POLL_SECONDS=${CODEBROWSE_POLL_SECONDS:-1}
MAX_POLLS=${CODEBROWSE_MAX_POLLS:-0}
SET_CLOCK=${CODEBROWSE_SET_CLOCK:-1}
MESSAGE_BYTES=8192
RUN_OUTPUT_MAX=${CODEBROWSE_RUN_OUTPUT_MAX:-921600}
NL='
'

log() {
  _line="$(date -u '+%Y-%m-%dT%H:%M:%SZ') codebrowse-agent: $*"
  printf '%s\n' "$_line"
  printf '%s\n' "$_line" >>"$LOG" 2>/dev/null || :
}

# Step results for the done message: "hostname ok; address 10.0.0.5/32 on eth0; ..."
STEPS=""
step() {
  log "$1: $2"
  STEPS="${STEPS:+$STEPS; }$1: $2"
}

# --- configuration -----------------------------------------------------------------------------

# The value of KEY in an env file (KEY=value, optional export and quotes); nothing is executed.
env_file_value() { # FILE KEY
  sed -n "s/^[[:space:]]*\(export[[:space:]][[:space:]]*\)\{0,1\}$2=//p" "$1" 2>/dev/null | tail -n 1 |
    sed "s/^\"\(.*\)\"[[:space:]]*$/\1/; s/^'\(.*\)'[[:space:]]*$/\1/; s/[[:space:]]*$//"
}

# KubeVirt's cloudInitNoCloud disk (label cidata): the user-data writes agent.env; when cloud-init
# is not in the image, read the same lines from it here.
read_nocloud() {
  for _dev in /dev/disk/by-label/cidata /dev/disk/by-label/CIDATA; do
    [ -e "$_dev" ] || continue
    _mnt="$STATE_ROOT/nocloud"
    mkdir -p "$_mnt"
    mount -o ro "$_dev" "$_mnt" 2>/dev/null || continue
    for _f in "$_mnt/user-data" "$_mnt/userdata"; do
      [ -f "$_f" ] || continue
      # A disk without settings (a golden image's boot) writes nothing: the next look reads it again.
      grep -q '^[[:space:]]*CODEBROWSE_[A-Z_]*=' "$_f" || break
      mkdir -p "$(dirname "$CONFIG")"
      (umask 077 && sed -n 's/^[[:space:]]*\(CODEBROWSE_[A-Z_]*=.*\)$/\1/p' "$_f" >"$CONFIG")
      log "read the agent settings from the NoCloud disk $_dev into $CONFIG"
      break
    done
    umount "$_mnt" 2>/dev/null
    return 0
  done
  return 1
}

load_config() {
  PORTAL=${CODEBROWSE_PORTAL_URL:-${CODEBROWSE_PORTAL:-}}
  TOKEN=${CODEBROWSE_AGENT_TOKEN:-${CODEBROWSE_TOKEN:-}}
  # This VM's NoCloud disk is read every time: a disk restored from an archived session still has
  # the settings (token) of the VM it was archived from in $CONFIG.
  if [ -z "$PORTAL" ] || [ -z "$TOKEN" ]; then
    read_nocloud || :
  fi
  if [ -f "$CONFIG" ]; then
    [ -n "$PORTAL" ] || PORTAL=$(env_file_value "$CONFIG" CODEBROWSE_PORTAL_URL)
    [ -n "$PORTAL" ] || PORTAL=$(env_file_value "$CONFIG" CODEBROWSE_PORTAL)
    [ -n "$TOKEN" ] || TOKEN=$(env_file_value "$CONFIG" CODEBROWSE_AGENT_TOKEN)
    [ -n "$TOKEN" ] || TOKEN=$(env_file_value "$CONFIG" CODEBROWSE_TOKEN)
  fi
  PORTAL=${PORTAL%/}
  MAC=${CODEBROWSE_MAC:-}
  [ -n "$MAC" ] || [ ! -f "$CONFIG" ] || MAC=$(env_file_value "$CONFIG" CODEBROWSE_MAC)
  LAN_MAC=${CODEBROWSE_LAN_MAC:-}
  [ -n "$LAN_MAC" ] || [ ! -f "$CONFIG" ] || LAN_MAC=$(env_file_value "$CONFIG" CODEBROWSE_LAN_MAC)
  [ -n "$PORTAL" ] && [ -n "$TOKEN" ]
}

# A guest restored from a memory snapshot wakes with the snapshot's MAC address and DHCP lease,
# shared by every VM restored from it: take this VM's own MAC and a lease of its own.
adopt_mac() {
  [ -n "$MAC" ] || return 0
  _mac=$(printf '%s' "$MAC" | tr 'A-F' 'a-f')
  case $_mac in
    [0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]:[0-9a-f][0-9a-f]) ;;
    *)
      log "refused the invalid CODEBROWSE_MAC \"$MAC\""
      return 0
      ;;
  esac
  _if=""
  for _dev in /sys/class/net/*; do
    _name=${_dev##*/}
    if [ "$_name" = lo ] || [ ! -f "$_dev/address" ]; then continue; fi
    [ "$(cat "$_dev/address")" = "$_mac" ] && return 0
    _if=${_if:-$_name}
  done
  [ -n "$_if" ] || return 0
  if ! ip link set dev "$_if" address "$_mac" 2>"$PRIV/ip.err"; then
    log "could not set the MAC $_mac on $_if: $(cat "$PRIV/ip.err")"
    return 0
  fi
  # A new lease for the new MAC (the image's networkd identifies DHCP clients by MAC).
  networkctl reconfigure "$_if" >/dev/null 2>&1 || networkctl renew "$_if" >/dev/null 2>&1 || :
  _i=0
  while [ "$_i" -lt 30 ] && ! ip -4 -o addr show dev "$_if" scope global 2>/dev/null | grep -q inet; do
    sleep 1
    _i=$((_i + 1))
  done
  log "set this VM's MAC $_mac on $_if (restored from a memory snapshot): $(ip -4 -o addr show dev "$_if" scope global 2>/dev/null | awk '{ print $4 }' | tr '\n' ' ')"
}

# --- HTTP ----------------------------------------------------------------------------------------

HTTP_TOOL=${CODEBROWSE_HTTP:-}
if [ -z "$HTTP_TOOL" ]; then
  if command -v curl >/dev/null 2>&1; then HTTP_TOOL=curl; elif command -v wget >/dev/null 2>&1; then HTTP_TOOL=wget; fi
fi

# http METHOD URL OUTFILE [BODYFILE] [auth|noauth]: 0 when a response came (HTTP_STATUS holds its
# status, HTTP_DATE its Date header), 1 when none did (HTTP_ERROR says why). A call may take
# HTTP_MAX_TIME seconds (60; downloads: 3600).
http() {
  _method=$1 _url=$2 _out=$3 _body=${4:-} _auth=${5:-auth}
  _hdrs="$PRIV/http.headers"
  : >"$_hdrs"
  HTTP_STATUS="" HTTP_DATE="" HTTP_ERROR=""
  case $HTTP_TOOL in
    curl)
      set -- -sS -g --connect-timeout 10 --max-time "${HTTP_MAX_TIME:-60}" -o "$_out" -D "$_hdrs" -w '%{http_code}'
      [ "$_auth" = auth ] && set -- "$@" -H "@$PRIV/auth.header"
      [ -n "$_body" ] && set -- "$@" -X "$_method" -H 'Content-Type: application/json' --data-binary "@$_body"
      HTTP_STATUS=$(curl "$@" -- "$_url" 2>"$PRIV/http.err")
      [ "${HTTP_STATUS:-000}" != 000 ] || HTTP_STATUS=""
      ;;
    wget)
      set -- -q -S -T 10 -O "$_out"
      [ "$_auth" = auth ] && set -- "$@" --header "Authorization: Bearer $TOKEN"
      [ -n "$_body" ] && set -- "$@" --header 'Content-Type: application/json' --post-file "$_body"
      wget "$@" -- "$_url" 2>"$_hdrs"
      HTTP_STATUS=$(awk '/^ *HTTP\/[0-9.]+ [0-9][0-9][0-9]/ { s = $2 } END { print s }' "$_hdrs")
      cp "$_hdrs" "$PRIV/http.err"
      ;;
    *)
      HTTP_ERROR="neither curl nor wget is installed"
      return 1
      ;;
  esac
  HTTP_DATE=$(sed -n 's/^ *[Dd]ate: *\(.*[^[:space:]]\)[[:space:]]*$/\1/p' "$_hdrs" | tail -n 1)
  if [ -z "$HTTP_STATUS" ]; then
    HTTP_ERROR=$(tail -c 300 "$PRIV/http.err" | tr '\n' ' ')
    return 1
  fi
  return 0
}

# Posts a JSON body file, retrying while the portal is away or busy (5xx, 409); 0 when accepted.
post() { # PATH BODYFILE
  _attempt=1 _wait=1
  while :; do
    if http POST "$PORTAL$1" "$PRIV/post.out" "$2"; then
      case $HTTP_STATUS in
        2??) return 0 ;;
        409 | 429 | 5??) log "POST $1: HTTP $HTTP_STATUS $(head -c 300 "$PRIV/post.out"); again in $_wait s" ;;
        *)
          log "POST $1 refused: HTTP $HTTP_STATUS $(head -c 300 "$PRIV/post.out")"
          return 1
          ;;
      esac
    else
      log "POST $1: no answer ($HTTP_ERROR); again in $_wait s"
    fi
    [ "$_attempt" -ge 10 ] && return 1
    sleep "$_wait"
    _attempt=$((_attempt + 1)) _wait=$((_wait * 2))
    [ "$_wait" -gt 30 ] && _wait=30
  done
}

# --- the manifest --------------------------------------------------------------------------------

wait_for_manifest() {
  _polls=0 _said=""
  while :; do
    _polls=$((_polls + 1))
    if http GET "$PORTAL/agent/v1/manifest" "$PRIV/manifest.json"; then
      case $HTTP_STATUS in
        200)
          if json_flatten <"$PRIV/manifest.json" >"$PRIV/manifest.flat" 2>"$PRIV/json.err"; then
            return 0
          fi
          _now="the manifest is not JSON: $(cat "$PRIV/json.err")"
          ;;
        204) _now="unclaimed: waiting for a session (polling every $POLL_SECONDS s)" ;;
        401 | 403) _now="the portal refused this VM's token (HTTP $HTTP_STATUS)" ;;
        *) _now="the portal answered HTTP $HTTP_STATUS" ;;
      esac
    else
      _now="the portal $PORTAL does not answer: $HTTP_ERROR"
    fi
    # Say each new state once, and every 10 minutes again.
    if [ "$_now" != "$_said" ] || [ $((_polls % 600)) = 0 ]; then
      log "$_now"
      _said=$_now
    fi
    if [ "$MAX_POLLS" -gt 0 ] && [ "$_polls" -ge "$MAX_POLLS" ]; then
      log "gave up after $_polls polls (CODEBROWSE_MAX_POLLS)"
      return 1
    fi
    sleep "$POLL_SECONDS"
  done
}

m() { json_get "$MANIFEST" "$1"; }

# --- setup steps ---------------------------------------------------------------------------------

# After a memory snapshot is restored the clock is that of the snapshot: take the portal's.
set_clock() {
  [ "$SET_CLOCK" = 1 ] && [ -n "$HTTP_DATE" ] || return 0
  _portal=$(date -u -d "$HTTP_DATE" +%s 2>/dev/null) || return 0
  _local=$(date -u +%s)
  _skew=$((_portal - _local))
  if [ "$_skew" -gt 5 ] || [ "$_skew" -lt -5 ]; then
    if date -u -s "@$_portal" >/dev/null 2>&1; then
      step clock "set from the portal's Date header (was ${_skew} s off)"
    else
      step clock "${_skew} s off the portal, and setting it failed"
    fi
  fi
}

valid_hostname() {
  printf '%s' "$1" | grep -Eq '^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$' &&
    [ "${#1}" -le 253 ]
}

# Writes FILE only when CONTENT differs (a second run changes nothing).
write_if_changed() { # FILE CONTENT-FILE
  cmp -s "$1" "$2" 2>/dev/null && { rm -f "$2"; return 0; }
  cat "$2" >"$1" && rm -f "$2"
}

set_hostname() {
  _fqdn=$(m hostname) || { step hostname "none in the manifest; left as it is"; return 0; }
  _fqdn=${_fqdn%.}
  valid_hostname "$_fqdn" || { step hostname "refused the invalid name \"$_fqdn\""; return 1; }
  _short=${_fqdn%%.*}
  printf '%s\n' "$_short" >"$PRIV/hostname.new" && write_if_changed /etc/hostname "$PRIV/hostname.new"
  if [ "$(hostname 2>/dev/null)" != "$_short" ]; then
    hostname "$_short" 2>/dev/null || printf '%s\n' "$_short" >/proc/sys/kernel/hostname 2>/dev/null || :
  fi
  _addr=$(m ip) && _addr=${_addr%%/*} || _addr=127.0.1.1
  {
    grep -v -e '# codebrowse$' -e '^127\.0\.1\.1[[:space:]]' /etc/hosts 2>/dev/null
    if [ "$_short" = "$_fqdn" ]; then
      printf '%s\t%s # codebrowse\n' "$_addr" "$_fqdn"
    else
      printf '%s\t%s %s # codebrowse\n' "$_addr" "$_fqdn" "$_short"
    fi
  } >"$PRIV/hosts.new"
  write_if_changed /etc/hosts "$PRIV/hosts.new"
  step hostname "$_fqdn (kernel: $(hostname 2>/dev/null))"
}

# The NIC with MAC $1 (lower case), or nothing.
nic_by_mac() {
  for _dev in /sys/class/net/*; do
    [ -f "$_dev/address" ] || continue
    [ "$(tr 'A-F' 'a-f' <"$_dev/address")" = "$1" ] && { printf '%s\n' "${_dev##*/}"; return 0; }
  done
  return 1
}

valid_mac() {
  printf '%s' "$1" | grep -Eq '^[0-9a-f]{2}(:[0-9a-f]{2}){5}$'
}

# The pool network's NIC is the agent's, not networkd's: no DHCP there (a LAN's DHCP server must not
# hand the VM an address of its own), and nothing networkd would later remove. Run at every start,
# before the claim: /run is empty after a boot.
lan_unmanaged() {
  _lm=${LAN_MAC:-}
  [ -n "$_lm" ] || return 0
  _lm=$(printf '%s' "$_lm" | tr 'A-F' 'a-f')
  valid_mac "$_lm" || { log "refused the invalid CODEBROWSE_LAN_MAC \"$_lm\""; return 0; }
  if [ -d /run/systemd/network ] || mkdir -p /run/systemd/network 2>/dev/null; then
    printf '[Match]\nMACAddress=%s\n\n[Link]\nUnmanaged=yes\n' "$_lm" >"$PRIV/lan.network"
    if ! cmp -s "$PRIV/lan.network" /run/systemd/network/10-codebrowse-lan.network 2>/dev/null; then
      cp "$PRIV/lan.network" /run/systemd/network/10-codebrowse-lan.network
      networkctl reload >/dev/null 2>&1 || :
    fi
  fi
  _li=$(nic_by_mac "$_lm") || { log "no NIC with the pool network's MAC $_lm (yet)"; return 0; }
  # Only the NIC that holds an address answers ARP for it (not the pod network's, for the LAN's).
  sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 >/dev/null 2>&1 || :
  ip link set "$_li" up 2>/dev/null || :
}

# The session's address on the pool network's NIC (manifest network.mac), with the prefix of the
# pool's range (the LAN the hosts share); replies from it leave through its gateway (a routing table
# of its own: the pod network's NIC keeps the main default route, to the portal); its DNS servers;
# then announced: gratuitous ARP and one broadcast ping to the subnet (switches that cache ARP learn
# the new MAC: a re-split moves an address to another host), or for IPv6 an unsolicited neighbour
# advertisement (the kernel sends one after DAD with ndisc_notify).
set_address() {
  _addr=$(m network.address) || _addr=$(m ip) || { step address "none in the manifest; left as it is"; return 0; }
  _addr=${_addr%%/*}
  _len=$(m network.prefixLength) || { step address "the manifest gives $_addr no network.prefixLength: not set"; return 1; }
  if ! printf '%s/%s' "$_addr" "$_len" | grep -Eq '^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$|^[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*/[0-9]{1,3}$'; then
    step address "refused the invalid address \"$_addr/$_len\""
    return 1
  fi
  command -v ip >/dev/null 2>&1 || { step address "ip (iproute2) is not installed: $_addr not set"; return 1; }
  _mac=$(m network.mac) || _mac=""
  _mac=$(printf '%s' "$_mac" | tr 'A-F' 'a-f')
  if ! valid_mac "$_mac"; then
    step address "the manifest names no valid network.mac: $_addr not set"
    return 1
  fi
  LAN_MAC=$_mac
  lan_unmanaged
  _if=$(nic_by_mac "$_mac") || { step address "no NIC with MAC $_mac (the pool network's): $_addr not set"; return 1; }
  _gw=$(m network.gateway) || _gw=""
  case $_gw in *[!0-9A-Fa-f:.]*) step address "refused the invalid gateway \"$_gw\""; return 1 ;; esac
  case $_addr in *:*) _fam=-6 ;; *) _fam=-4 ;; esac
  [ "$_fam" = -6 ] && sysctl -qw "net.ipv6.conf.$_if.ndisc_notify=1" "net.ipv6.conf.$_if.accept_ra=0" >/dev/null 2>&1
  ip link set "$_if" up 2>/dev/null
  if ip -o "$_fam" addr show dev "$_if" 2>/dev/null | awk -v a="$_addr" '{ split($4, p, "/"); if (p[1] == a) f = 1 } END { exit !f }'; then
    _how="already on $_if"
  else
    # Only the session's address: nothing a DHCP client may have put there before the claim.
    ip "$_fam" addr flush dev "$_if" scope global 2>/dev/null
    if ip "$_fam" addr add "$_addr/$_len" dev "$_if" 2>"$PRIV/ip.err"; then
      _how="on $_if ($_mac) as /$_len"
    else
      step address "ip addr add $_addr/$_len dev $_if failed: $(cat "$PRIV/ip.err")"
      return 1
    fi
  fi
  if [ -n "$_gw" ]; then
    _net=$(ip -o "$_fam" route show dev "$_if" scope link proto kernel 2>/dev/null | awk '{ print $1; exit }')
    [ -z "$_net" ] || ip "$_fam" route replace "$_net" dev "$_if" table 100 2>/dev/null
    if ip "$_fam" route replace default via "$_gw" dev "$_if" table 100 2>"$PRIV/ip.err"; then
      ip "$_fam" rule show 2>/dev/null | grep -q "from $_addr lookup 100" ||
        ip "$_fam" rule add from "$_addr" lookup 100 priority 100 2>/dev/null
      _how="$_how; replies leave by $_gw"
    else
      _how="$_how; no route by $_gw ($(cat "$PRIV/ip.err"))"
    fi
  fi
  _dns=""
  _i=0
  while _d=$(m "network.dns.$_i"); do
    case $_d in *[!0-9A-Fa-f:.]*) ;; *) _dns="$_dns $_d" ;; esac
    _i=$((_i + 1))
  done
  if [ -n "$_dns" ] && command -v resolvectl >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    resolvectl dns "$_if" $_dns 2>/dev/null && _how="$_how; DNS$_dns"
  fi
  if [ "$_fam" = -6 ]; then
    _how="$_how; unsolicited neighbour advertisement after DAD (ndisc_notify)"
    command -v ndisc6 >/dev/null 2>&1 && ndisc6 -q -1 "$_addr" "$_if" >/dev/null 2>&1
  else
    if command -v arping >/dev/null 2>&1 && arping -U -c 2 -I "$_if" "$_addr" >/dev/null 2>&1; then
      _how="$_how; gratuitous ARP sent"
    else
      _how="$_how; no gratuitous ARP (arping missing or failed)"
    fi
    _bc=$(m network.broadcast) || _bc=""
    case $_bc in
      "" | *[!0-9.]*) ;;
      *)
        ping -b -c 1 -W 1 -I "$_if" "$_bc" >/dev/null 2>&1
        _how="$_how; broadcast ping to $_bc"
        ;;
    esac
  fi
  step address "$_addr $_how"
}

valid_user() {
  printf '%s' "$1" | grep -Eq '^[a-z_][a-z0-9_-]{0,31}$' && [ "$1" != root ]
}

create_user() {
  USER_NAME=$(m user) || { step user "none in the manifest"; return 1; }
  valid_user "$USER_NAME" || { step user "refused the invalid user name \"$USER_NAME\""; return 1; }
  if [ -f "$STATE_ROOT/user-$USER_NAME.done" ] && id "$USER_NAME" >/dev/null 2>&1; then
    if [ -f "$SD/login.done" ]; then
      step user "$USER_NAME (made before)"
      return 0
    fi
    # Made for another session (a VM restored from an archive): this session's login is set.
    _how="made before"
  elif id "$USER_NAME" >/dev/null 2>&1; then
    # Never hand out a system account (a session user named like a daemon).
    if [ "$(id -u "$USER_NAME")" -lt 1000 ]; then
      step user "refused: $USER_NAME is a system account of this image"
      return 1
    fi
    _how="exists already"
  else
    _shell=/bin/sh
    [ -x /bin/bash ] && _shell=/bin/bash
    if ! useradd -m -s "$_shell" -c "codebrowse session user" "$USER_NAME" >"$SD/useradd.out" 2>&1; then
      step user "useradd $USER_NAME failed: $(tail -c 300 "$SD/useradd.out")"
      return 1
    fi
    _how="created"
  fi
  _home=$(getent passwd "$USER_NAME" | cut -d: -f6)
  _group=$(id -gn "$USER_NAME")
  if _password=$(m password) && [ -n "$_password" ]; then
    case $_password in
      *"$NL"*) step user "refused a password with a line break"; return 1 ;;
    esac
    # Set only when it changed (a digest of the last one set, root only): a new session of the same
    # user with the same password leaves /etc/shadow alone.
    _pwsum=$(printf '%s' "$_password" | sha256sum | cut -c1-64)
    if [ "$(cat "$PRIV/password-$USER_NAME.sha256" 2>/dev/null)" = "$_pwsum" ]; then
      _how="$_how, password as before"
    elif ! printf '%s:%s\n' "$USER_NAME" "$_password" | chpasswd 2>"$SD/chpasswd.err"; then
      step user "chpasswd failed: $(cat "$SD/chpasswd.err")"
      return 1
    else
      printf '%s\n' "$_pwsum" >"$PRIV/password-$USER_NAME.sha256"
      _how="$_how, password set"
    fi
  fi
  _keys=$(json_count "$MANIFEST" sshKeys)
  if [ "$_keys" -gt 0 ]; then
    mkdir -p "$_home/.ssh"
    _k=0
    : >"$SD/authorized_keys"
    while [ "$_k" -lt "$_keys" ]; do
      # One key a line: a line break inside a key could smuggle in another key or options.
      m "sshKeys.$_k" | tr -d '\r\n' >>"$SD/authorized_keys" && echo >>"$SD/authorized_keys"
      _k=$((_k + 1))
    done
    cmp -s "$SD/authorized_keys" "$_home/.ssh/authorized_keys" || cat "$SD/authorized_keys" >"$_home/.ssh/authorized_keys"
    chown -R -h "$USER_NAME:$_group" "$_home/.ssh"
    chmod 0700 "$_home/.ssh"
    chmod 0600 "$_home/.ssh/authorized_keys"
    # No password: "*" (no password can match) rather than "!" (locked, which sshd refuses).
    [ -n "${_password:-}" ] || [ "$(getent shadow "$USER_NAME" | cut -d: -f2)" = '*' ] || usermod -p '*' "$USER_NAME"
    _how="$_how, $_keys ssh key(s)"
  fi
  # The system user that unpacks archives (install-rules.sh), made with the session's.
  ensure_unpack_user || { step user "could not make the system user $UNPACK_USER"; return 1; }
  touch "$STATE_ROOT/user-$USER_NAME.done" "$SD/login.done"
  step user "$USER_NAME $_how"
}

grant_sudo() {
  _file="/etc/sudoers.d/codebrowse-$USER_NAME"
  if [ -f "$STATE_ROOT/sudo-$USER_NAME.done" ] && [ -f "$_file" ]; then
    step sudo "$_file (made before)"
    return 0
  fi
  [ -d /etc/sudoers.d ] || { step sudo "no /etc/sudoers.d (sudo not installed?)"; return 1; }
  # A name with a dot is skipped by sudo's includedir: the file is checked under one first.
  _tmp="/etc/sudoers.d/.codebrowse-$USER_NAME.new"
  printf '# the codebrowse session user: it is their VM\n%s ALL=(ALL:ALL) NOPASSWD: ALL\n' "$USER_NAME" >"$_tmp"
  chmod 0440 "$_tmp"
  if command -v visudo >/dev/null 2>&1 && ! visudo -c -q -f "$_tmp" >"$SD/visudo.out" 2>&1; then
    rm -f "$_tmp"
    step sudo "visudo -c refused the rule: $(cat "$SD/visudo.out")"
    return 1
  fi
  mv -f "$_tmp" "$_file"
  touch "$STATE_ROOT/sudo-$USER_NAME.done"
  step sudo "$_file"
}

# Enables (and, on a running system, starts) a service; says how.
enable_service() { # UNIT...
  for _unit in "$@"; do
    if command -v systemctl >/dev/null 2>&1 && systemctl cat "$_unit.service" >/dev/null 2>&1 ||
      [ -f "/lib/systemd/system/$_unit.service" ] || [ -f "/usr/lib/systemd/system/$_unit.service" ]; then
      if [ -d /run/systemd/system ]; then
        systemctl enable --now "$_unit.service" >/dev/null 2>&1 && { echo "$_unit enabled and started"; return 0; }
      else
        systemctl enable "$_unit.service" >/dev/null 2>&1 && { echo "$_unit enabled (systemd not running here)"; return 0; }
      fi
    elif [ -x "/etc/init.d/$_unit" ]; then
      update-rc.d "$_unit" enable >/dev/null 2>&1
      "/etc/init.d/$_unit" start >/dev/null 2>&1 && { echo "$_unit started (init.d)"; return 0; }
    fi
  done
  return 1
}

enable_ssh() {
  if [ -x /usr/sbin/sshd ]; then
    # Host keys made once per VM: VMs cloned from one image or snapshot must not share them.
    if [ ! -f "$STATE_ROOT/hostkeys.done" ]; then
      rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
      ssh-keygen -A >/dev/null 2>&1 || { step ssh "ssh-keygen -A failed"; return 1; }
      touch "$STATE_ROOT/hostkeys.done"
    fi
    _how=$(enable_service ssh sshd) || { step ssh "could not enable the ssh service"; return 1; }
    step ssh "$_how; fresh host keys"
  else
    step ssh "no openssh-server on this image"
  fi
  if [ -x /usr/sbin/in.telnetd ] || [ -x /usr/sbin/telnetd ]; then
    _how=$(enable_service inetd openbsd-inetd inetutils-inetd xinetd) || _how="could not enable inetd"
    step telnet "$_how"
  fi
}

# --- packages ------------------------------------------------------------------------------------

# The file name a package is installed by (its suffix picks the rule): the manifest's "filename"
# when the portal gives one, else what the portal would make of the URL (packageFileName in
# operator/src/portal/agent-api.ts): the last segment of the URL's path, percent-decoded, with every
# character but [A-Za-z0-9._+~-] (each UTF-16 unit of it) made "_", leading dots and dashes
# dropped, the last 128 kept; "package-<index>" when nothing usable is left.
package_name() { # K INDEX
  if _fn=$(m "packages.$1.filename") && [ -n "$_fn" ]; then
    printf '%s' "$_fn" | file_name_awk name "$2"
  else
    _url=$(m "packages.$1.url") || _url=""
    printf '%s' "$_url" | file_name_awk url "$2"
  fi
}

package_file_name() { # URL INDEX (for tests)
  printf '%s' "$1" | file_name_awk url "$2"
}

file_name_awk() { # url|name INDEX < TEXT
  LC_ALL=C awk -v mode="$1" -v fallback="package-$2" '
    BEGIN { for (c = 1; c < 256; c++) ord[sprintf("%c", c)] = c }
    function safe(c) { return c ~ /[A-Za-z0-9._+~-]/ ? c : "_" }
    { u = (NR > 1 ? u "\n" : "") $0 }
    END {
      if (mode == "url") {
        sub(/[?#].*/, "", u)
        if (!match(u, /^[A-Za-z][A-Za-z0-9+.-]*:/)) { print fallback; exit }
        scheme = tolower(substr(u, 1, RLENGTH - 1)); u = substr(u, RLENGTH + 1)
        if (scheme ~ /^(http|https|ftp|ws|wss|file)$/) gsub(/\\/, "/", u)
        if (substr(u, 1, 2) == "//") { u = substr(u, 3); if (!sub(/^[^\/]*\//, "/", u)) u = "" }
        sub(/.*\//, "", u)
      }
      # Percent-decode (in url mode): ASCII becomes itself or "_" at once, other bytes stay for
      # the UTF-8 check; a malformed escape means nothing usable, as decodeURIComponent throws.
      s = ""
      n = length(u)
      for (k = 1; k <= n; k++) {
        c = substr(u, k, 1)
        if (c == "%" && mode == "url") {
          h = tolower(substr(u, k + 1, 2))
          hi = index("0123456789abcdef", substr(h, 1, 1)); lo = index("0123456789abcdef", substr(h, 2, 1))
          if (length(h) < 2 || !hi || !lo) { print fallback; exit }
          v = (hi - 1) * 16 + lo - 1
          c = v < 128 ? (v == 0 ? "_" : safe(sprintf("%c", v))) : sprintf("%c", v)
          k += 2
        } else if (ord[c] < 128) c = safe(c)
        s = s c
      }
      # One "_" per UTF-16 unit of each character outside ASCII; invalid UTF-8: nothing usable.
      out = ""
      n = length(s)
      for (k = 1; k <= n; k++) {
        b = ord[substr(s, k, 1)]
        if (b < 128) { out = out substr(s, k, 1); continue }
        if (b >= 194 && b <= 223) len = 2
        else if (b >= 224 && b <= 239) len = 3
        else if (b >= 240 && b <= 244) len = 4
        else { print fallback; exit }
        lo = 128; hi = 191
        if (b == 224) lo = 160
        if (b == 237) hi = 159
        if (b == 240) lo = 144
        if (b == 244) hi = 143
        for (j = 1; j < len; j++) {
          x = ord[substr(s, k + j, 1)]
          if (x < (j == 1 ? lo : 128) || x > (j == 1 ? hi : 191)) { print fallback; exit }
        }
        out = out (len == 4 ? "__" : "_")
        k += len - 1
      }
      sub(/^[.-]+/, "", out)
      if (length(out) > 128) out = substr(out, length(out) - 127)
      if (out == "" || out ~ /^_*$/) out = fallback
      print out
    }'
}

# Saves the outcome of package INDEX (a crash after this does not install it again).
save_result() { # INDEX
  tail -c "$MESSAGE_BYTES" "$PKG_LOG" >"$SD/pkg-$1.message"
  printf '%s %s\n' "$PKG_INSTALLED" "${PKG_EXIT:--}" >"$SD/pkg-$1.result.new"
  mv -f "$SD/pkg-$1.result.new" "$SD/pkg-$1.result"
}

report_package() { # INDEX
  read -r _installed _exit <"$SD/pkg-$1.result"
  {
    printf '{"package":%s,"installed":%s' "$1" "$_installed"
    [ "$_exit" = - ] || printf ',"exitCode":%s' "$_exit"
    printf ',"message":'
    json_quote <"$SD/pkg-$1.message"
    printf '}'
  } >"$SD/report.json"
  if post /agent/v1/report "$SD/report.json"; then
    touch "$SD/pkg-$1.reported"
    return 0
  fi
  log "package $1: the report did not reach the portal; a restart of the agent sends it again"
  return 1
}

# Leaves the package file in DIR (the user's home) with a note saying why it is not installed.
keep_with_note() { # FILE NAME WHY [DIR]
  _keep_dir=${4:-$PKG_HOME}
  if [ -n "$1" ] && [ "$(dirname "$1")" = "$_keep_dir" ]; then
    _dest=$1
  else
    _dest=$(fresh_path "$_keep_dir" "$2")
    if [ -f "$1" ]; then
      cp -- "$1" "$_dest" && chown -h "$PKG_UID:$PKG_GID" -- "$_dest"
    fi
  fi
  {
    printf 'codebrowse could not install %s\n\n' "$2"
    printf 'from:   %s\n' "$PKG_URL"
    printf 'why:    %s\n' "$3"
    [ -f "$_dest" ] && printf 'file:   %s\n' "$_dest"
    printf '\nThe last lines of the install output:\n\n'
    tail -c 4096 "$PKG_LOG"
  } >"$_dest.codebrowse-note.txt"
  chown -h "$PKG_UID:$PKG_GID" -- "$_dest.codebrowse-note.txt"
}

# Downloads package K (manifest position; INDEX its index) into DIR and checks its digest.
# Sets FETCHED (the file) or, when it failed, PKG_SUMMARY. Output goes to PKG_LOG.
fetch_package() { # K INDEX DIR
  FETCHED="" PKG_SUMMARY=""
  PKG_URL=$(m "packages.$1.url") || PKG_URL=""
  _name=$(package_name "$1" "$2")
  _file=$(fresh_path "$3" "$_name")
  _digest=$(m "packages.$1.digest") || _digest=""
  _download=$(m "packages.$1.download") || _download=""
  log "package $2: $_name from $PKG_URL"
  case $_download in
    /*) _from="$PORTAL$_download" _auth=auth ;;
    http://* | https://*) _from=$_download _auth=noauth ;;
    *)
      case $PKG_URL in
        http://* | https://* | ftp://*) _from=$PKG_URL _auth=noauth ;;
        *) _from="" ;;
      esac
      [ -n "$_from" ] && note "the manifest has no download path: fetching $PKG_URL directly"
      ;;
  esac
  if [ -z "$_from" ]; then
    PKG_SUMMARY="the manifest gives no way to download it (no download path, no http(s)/ftp URL)"
  else
    _try=1
    while :; do
      if HTTP_MAX_TIME=3600 http GET "$_from" "$_file" "" "$_auth" && [ "$HTTP_STATUS" = 200 ]; then break; fi
      if [ "$_try" -ge 3 ]; then
        PKG_SUMMARY="download failed: ${HTTP_STATUS:+HTTP $HTTP_STATUS}${HTTP_ERROR}"
        rm -f -- "$_file"
        break
      fi
      sleep "$_try"
      _try=$((_try + 1))
    done
  fi
  if [ -z "$PKG_SUMMARY" ]; then
    note "downloaded $(wc -c <"$_file" | tr -d ' ') bytes"
    case $_digest in
      sha256:*)
        _want=$(printf '%s' "${_digest#sha256:}" | tr 'A-F' 'a-f')
        _got=$(sha256sum "$_file" | cut -d' ' -f1)
        if [ "$_got" != "$_want" ]; then
          note "sha256 mismatch: the manifest says $_want, the download is $_got"
          PKG_SUMMARY="checksum mismatch: sha256 $_got, expected $_want"
        fi
        ;;
      "") PKG_SUMMARY="the manifest has no sha256 digest for it: not installed unverified" ;;
      *) PKG_SUMMARY="unsupported digest \"$_digest\" (only sha256:<hex>)" ;;
    esac
  fi
  if [ -n "$PKG_SUMMARY" ]; then
    rm -f -- "$_file"
    note "not installed: $PKG_SUMMARY"
    return 1
  fi
  note "sha256 verified"
  FETCHED=$_file
}

# Downloads, verifies and installs package K by the suffix rules (install-rules.sh), leaves what
# failed with a note, and saves the outcome. Runs in a subshell of main.
do_package() { # K INDEX
  PKG_INSTALLED=false PKG_EXIT=""
  _work="$STATE_ROOT/work/$2"
  rm -rf -- "$_work"
  mkdir -p "$_work" && chmod 0755 "$STATE_ROOT/work" "$_work"
  PKG_LOG="$_work/output.log"
  PKG_STATE="$SD/pkg-$2.unpack-dir"
  : >"$PKG_LOG"
  # Its own install steps (codebrowse.yaml), when it has them: one file each.
  PKG_STEPS_DIR=""
  _steps=$(json_count "$MANIFEST" "packages.$1.install")
  if [ "$_steps" -gt 0 ]; then
    PKG_STEPS_DIR="$_work/steps"
    mkdir -p "$PKG_STEPS_DIR"
    _s=0
    while [ "$_s" -lt "$_steps" ]; do
      m "packages.$1.install.$_s" >"$PKG_STEPS_DIR/$_s"
      _s=$((_s + 1))
    done
  fi
  if fetch_package "$1" "$2" "$_work"; then
    export CODEBROWSE_PACKAGE_FILE="$FETCHED" CODEBROWSE_PACKAGE_URL="$PKG_URL" \
      CODEBROWSE_USER="$PKG_USER" CODEBROWSE_HOME="$PKG_HOME"
    install_package "$FETCHED" "$(basename "$FETCHED")" "$2"
  fi
  _name=$(package_name "$1" "$2")
  [ "$PKG_INSTALLED" = true ] || keep_with_note "$FETCHED" "$_name" "$PKG_SUMMARY"
  log "package $2: installed=$PKG_INSTALLED (${PKG_EXIT:-no exit status}) $PKG_SUMMARY"
  save_result "$2"
  rm -rf -- "$_work"
}

# The session's installScript replaces the suffix rules (the BrowseSession API says so): every
# package is downloaded and verified into ~/downloads, then the script runs once, as root, there,
# with the package files as arguments; each package's report carries the script's outcome.
run_install_script() { # SCRIPT
  _dl=$(cat "$SD/downloads.dir" 2>/dev/null) || _dl=""
  if [ -z "$_dl" ]; then
    _dl=$(fresh_path "$PKG_HOME" downloads)
    printf '%s\n' "$_dl" >"$SD/downloads.dir"
  fi
  mkdir -p "$_dl" && chown "$PKG_UID:$PKG_GID" "$_dl"
  _k=0
  while [ "$_k" -lt "$main_count" ]; do
    _index=$(package_index "$_k")
    if [ ! -f "$SD/pkg-$_index.result" ] && [ ! -f "$SD/pkg-$_index.fetched" ]; then
      PKG_LOG="$SD/pkg-$_index.log"
      : >"$PKG_LOG"
      if fetch_package "$_k" "$_index" "$_dl"; then
        chown -h "$PKG_UID:$PKG_GID" "$FETCHED"
        printf '%s\n' "$FETCHED" >"$SD/pkg-$_index.fetched"
      else
        PKG_INSTALLED=false PKG_EXIT=""
        keep_with_note "" "$(package_name "$_k" "$_index")" "$PKG_SUMMARY" "$_dl"
        save_result "$_index"
      fi
    fi
    _k=$((_k + 1))
  done
  if [ ! -f "$SD/script.result" ]; then
    set --
    _k=0
    while [ "$_k" -lt "$main_count" ]; do
      _index=$(package_index "$_k")
      [ -f "$SD/pkg-$_index.fetched" ] && set -- "$@" "$(basename "$(cat "$SD/pkg-$_index.fetched")")"
      _k=$((_k + 1))
    done
    PKG_LOG="$SD/script.log"
    : >"$PKG_LOG"
    log "running the session's installScript in $_dl with: $*"
    export CODEBROWSE_USER="$PKG_USER" CODEBROWSE_HOME="$PKG_HOME" CODEBROWSE_DOWNLOADS="$_dl"
    RUN_LABEL="(installScript, in $_dl) $*"
    (cd "$_dl" && run_logged sh "$SD/install-script.sh" "$@")
    _status=$?
    # What the script unpacked as root in the user's home is the user's (-h: links not followed).
    chown -R -h "$PKG_UID:$PKG_GID" -- "$_dl"
    log "installScript exited $_status"
    printf '%s\n' "$_status" >"$SD/script.result"
  fi
  read -r _status <"$SD/script.result"
  _k=0
  while [ "$_k" -lt "$main_count" ]; do
    _index=$(package_index "$_k")
    if [ ! -f "$SD/pkg-$_index.result" ]; then
      PKG_LOG="$SD/pkg-$_index.log"
      PKG_URL=$(m "packages.$_k.url") || PKG_URL=""
      _file=$(cat "$SD/pkg-$_index.fetched")
      { printf 'installScript exited %s\n' "$_status"; cat "$SD/script.log"; } >>"$PKG_LOG"
      PKG_EXIT=$_status PKG_INSTALLED=false
      if [ "$_status" = 0 ]; then
        PKG_INSTALLED=true
      else
        keep_with_note "$_file" "$(basename "$_file")" "the installScript exited $_status" "$_dl"
      fi
      save_result "$_index"
    fi
    _k=$((_k + 1))
  done
}

# The index the manifest gives package K (its position when it gives none).
package_index() { # K
  _i=$(m "packages.$1.index") || _i=$1
  case $_i in '' | *[!0-9]*) _i=$1 ;; esac
  printf '%s\n' "$_i"
}

# --- a test run (mode Run) ------------------------------------------------------------------------

# Runs the manifest's run.script once, as root, in a fresh directory, with the run's timeout; its
# exit status, time and output go to the portal. A restart after the script began does not run it
# again (a test that reboots the VM or kills the agent ends with what it said so far).
run_test() {
  if [ ! -f "$SD/run.status" ]; then
    if [ -f "$SD/run.started" ]; then
      printf '\n[codebrowse-agent: the agent restarted while the script ran; it was not run again]\n' >>"$SD/run.log"
      printf '%s %s %s\n' 255 false 0 >"$SD/run.status"
    else
      _timeout=$(m run.timeoutSeconds) || _timeout=1800
      case $_timeout in '' | *[!0-9]*) _timeout=1800 ;; esac
      m run.script >"$SD/run-script.sh" || { log "the manifest has no run.script"; return 1; }
      _dir=$(fresh_path "${PKG_HOME:-/root}" test-run)
      mkdir -p "$_dir"
      : >"$SD/run.log"
      date -u '+%Y-%m-%dT%H:%M:%SZ' >"$SD/run.started"
      log "running the test script in $_dir (timeout $_timeout s)"
      _t0=$(date +%s%N)
      (
        cd "$_dir" || exit 1
        export CODEBROWSE_RUN_DIR="$_dir" CODEBROWSE_USER="${PKG_USER:-}" CODEBROWSE_HOME="${PKG_HOME:-}"
        if command -v timeout >/dev/null 2>&1; then
          exec timeout -k 10 "$_timeout" sh "$SD/run-script.sh" </dev/null >>"$SD/run.log" 2>&1
        fi
        exec sh "$SD/run-script.sh" </dev/null >>"$SD/run.log" 2>&1
      )
      _rc=$?
      _t1=$(date +%s%N)
      _timedout=false
      # timeout(1): 124 when it stopped the script, 137 when it had to kill it.
      if [ "$_rc" = 124 ] || [ "$_rc" = 137 ]; then
        _timedout=true
        printf '\n[codebrowse-agent: stopped after %s s: spec.run.timeout]\n' "$_timeout" >>"$SD/run.log"
      fi
      printf '%s %s %s\n' "$_rc" "$_timedout" "$(((_t1 - _t0) / 1000000))" >"$SD/run.status"
      log "the test script exited $_rc after $(((_t1 - _t0) / 1000000)) ms"
    fi
  fi
  [ -f "$SD/run.reported" ] && return 0
  read -r _rc _timedout _ms <"$SD/run.status"
  _bytes=$(wc -c <"$SD/run.log" | tr -d ' ')
  if [ "$_bytes" -le "$RUN_OUTPUT_MAX" ]; then
    cp "$SD/run.log" "$SD/run.send"
  else
    {
      head -c 65536 "$SD/run.log"
      printf '\n[... %s bytes left out ...]\n' "$((_bytes - RUN_OUTPUT_MAX))"
      tail -c "$((RUN_OUTPUT_MAX - 65536 - 64))" "$SD/run.log"
    } >"$SD/run.send"
  fi
  {
    printf '{"exitCode":%s,"timedOut":%s,"durationSeconds":%s.%03d,"startedAt":"%s","outputBytes":%s,"output":' \
      "$_rc" "$_timedout" "$((_ms / 1000))" "$((_ms % 1000))" "$(cat "$SD/run.started")" "$_bytes"
    json_quote <"$SD/run.send"
    printf '}'
  } >"$SD/run.json"
  if post /agent/v1/result "$SD/run.json"; then
    touch "$SD/run.reported"
    log "reported the test run (exit $_rc)"
    return 0
  fi
  log "the test run's result did not reach the portal"
  return 1
}

# --- main ----------------------------------------------------------------------------------------

main() {
  if [ "$(id -u)" != 0 ]; then
    echo "codebrowse-agent: must run as root" >&2
    exit 1
  fi
  mkdir -p "$STATE_ROOT" "$PRIV" "$(dirname "$LOG")"
  chmod 0755 "$STATE_ROOT"
  chmod 0700 "$PRIV"
  # One agent at a time (a restart waits for a stray one).
  if command -v flock >/dev/null 2>&1; then
    exec 8>"$STATE_ROOT/agent.lock"
    flock -n 8 || { log "another agent is running; waiting for it"; flock 8; }
  fi
  [ -n "$HTTP_TOOL" ] || { log "neither curl nor wget is installed: cannot reach the portal"; exit 1; }
  _said=""
  while ! load_config; do
    [ -n "$_said" ] || log "no portal URL and token yet (environment, $CONFIG or a NoCloud disk); waiting"
    _said=1
    sleep "$POLL_SECONDS"
  done
  adopt_mac
  lan_unmanaged
  (umask 077 && printf 'Authorization: Bearer %s\n' "$TOKEN" >"$PRIV/auth.header")
  log "portal $PORTAL; waiting for the manifest"
  wait_for_manifest || exit 3

  MANIFEST="$PRIV/manifest.flat"
  _session=$(m session) || _session=unknown
  # Per session object (its uid): a VM restored from an archive may serve a new session of the same name.
  _uid=$(m uid) || _uid=""
  SD="$STATE_ROOT/sessions/$(printf '%s%s' "$_session" "${_uid:+-$_uid}" | tr -c 'A-Za-z0-9._-' '_')"
  mkdir -p "$SD"
  chmod 0700 "$SD"
  cp "$PRIV/manifest.flat" "$SD/manifest.flat"
  MANIFEST="$SD/manifest.flat"
  rm -f "$PRIV/manifest.json" "$PRIV/manifest.flat"
  log "claimed by session $_session"

  set_clock
  _setup_ok=true
  set_hostname || _setup_ok=false
  set_address || _setup_ok=false
  if create_user; then
    grant_sudo || _setup_ok=false
  else
    _setup_ok=false
    USER_NAME=""
  fi
  RUN_MODE=$(m mode) || RUN_MODE=""
  if [ "$RUN_MODE" = Run ]; then
    step ssh "not enabled: a test run needs no login"
  else
    enable_ssh || _setup_ok=false
  fi

  main_count=$(json_count "$MANIFEST" packages)
  if [ -n "$USER_NAME" ]; then
    PKG_USER=$USER_NAME
    PKG_UID=$(id -u "$USER_NAME") PKG_GID=$(id -g "$USER_NAME")
    PKG_HOME=$(getent passwd "$USER_NAME" | cut -d: -f6)
    if main_script=$(m installScript) && [ -n "$main_script" ]; then
      m installScript >"$SD/install-script.sh"
      (run_install_script)
    fi
  fi
  main_k=0 main_ok=0 main_failed="" main_undelivered=0
  while [ "$main_k" -lt "$main_count" ]; do
    main_index=$(package_index "$main_k")
    if [ -f "$SD/pkg-$main_index.result" ]; then
      [ -f "$SD/pkg-$main_index.reported" ] || log "package $main_index: $(cat "$SD/pkg-$main_index.result")"
    elif [ -z "$USER_NAME" ]; then
      PKG_LOG="$SD/pkg-$main_index.log"
      printf 'not installed: the session user could not be set up\n' >"$PKG_LOG"
      PKG_INSTALLED=false PKG_EXIT=""
      save_result "$main_index"
    else
      # A subshell: the install rules' variables cannot leak into this loop; the outcome is in $SD.
      (do_package "$main_k" "$main_index")
    fi
    if [ ! -f "$SD/pkg-$main_index.result" ]; then
      log "package $main_index: the install step ended without a result; the agent stops here"
      exit 1
    fi
    if [ ! -f "$SD/pkg-$main_index.reported" ]; then
      report_package "$main_index" || main_undelivered=$((main_undelivered + 1))
    fi
    read -r main_installed _ <"$SD/pkg-$main_index.result"
    if [ "$main_installed" = true ]; then
      main_ok=$((main_ok + 1))
    else
      main_failed="${main_failed:+$main_failed, }$main_index"
    fi
    main_k=$((main_k + 1))
  done

  if [ -f "$SD/done.reported" ]; then
    log "done was reported before"
  else
    if [ "$_setup_ok" = true ] && [ -z "$main_failed" ]; then
      _all=true
      _message="all is well: $main_ok of $main_count packages installed"
    else
      _all=false
      _message="$main_ok of $main_count packages installed${main_failed:+; failed: $main_failed}"
      [ "$_setup_ok" = true ] || _message="$_message; a setup step failed"
    fi
    _message="$_message. $STEPS"
    log "$_message"
    {
      printf '{"installed":%s,"message":' "$_all"
      printf '%s' "$_message" | head -c 1000 | json_quote
      printf '}'
    } >"$SD/done.json"
    if [ "$main_undelivered" = 0 ] && post /agent/v1/done "$SD/done.json"; then
      touch "$SD/done.reported"
      log "reported done (installed: $_all)"
    else
      log "the done report did not reach the portal; exiting with failure so the service restarts"
      exit 1
    fi
  fi
  if [ "$RUN_MODE" = Run ]; then
    if grep -q '^{"installed":true' "$SD/done.json"; then
      run_test || exit 1
    else
      log "the test script is not run: the install failed"
    fi
  fi
  exit 0
}

# Sourcing with CODEBROWSE_AGENT_SOURCE_ONLY=1 defines the functions only (for tests).
[ "${CODEBROWSE_AGENT_SOURCE_ONLY:-}" = 1 ] || main "$@"
