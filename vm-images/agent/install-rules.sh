# Install-by-suffix rules of the codebrowse guest agent (POSIX sh), sourced by codebrowse-agent.sh.
#
# install_package FILE NAME INDEX      installs one downloaded, digest-checked package file
#   in:  PKG_USER PKG_UID PKG_GID PKG_HOME (the session user), PKG_URL, PKG_LOG (output goes here),
#        PKG_STATE (a file that remembers the unpack dir across a crash), the ARCHIVE_* limits below
#   out: PKG_INSTALLED=true|false, PKG_EXIT (exit status of the step that decided, or empty when no
#        command ran), PKG_SUMMARY (one line for the report and the done message),
#        when the caller should leave the file in the user's home with a note
#
# Suffixes: .deb (dpkg -i), .rpm (rpm -i), .tar.gz .tgz .tar.bz2 .tbz2 .tbz .tar.xz .txz .tar .zip
# (checked, unpacked by the unprivileged UNPACK_USER, checked again, moved to
# ~/<name-without-suffix>/, given to the user, and built). Anything else is
# left in the home directory with a note. (A session's installScript replaces all of this: see
# run_install_script in codebrowse-agent.sh.)
# shellcheck disable=SC2034 # PKG_* are this file's results, read by the agent

ARCHIVE_MAX_ENTRIES=${CODEBROWSE_ARCHIVE_MAX_ENTRIES:-10000}
ARCHIVE_MAX_BYTES=${CODEBROWSE_ARCHIVE_MAX_BYTES:-1073741824}
ARCHIVE_MAX_RATIO=${CODEBROWSE_ARCHIVE_MAX_RATIO:-100}
INSTALL_TIMEOUT=${CODEBROWSE_INSTALL_TIMEOUT:-3600}
UNPACK_USER=${CODEBROWSE_UNPACK_USER:-codebrowse-unpack}
TAB=$(printf '\t')

# The kind of a package by its file name: deb rpm tar.gz tar.bz2 tar.xz tar zip, or unknown.
package_kind() {
  case $1 in
    *.deb) echo deb ;;
    *.rpm) echo rpm ;;
    *.tar.gz | *.tgz) echo tar.gz ;;
    *.tar.bz2 | *.tbz2 | *.tbz) echo tar.bz2 ;;
    *.tar.xz | *.txz) echo tar.xz ;;
    *.tar) echo tar ;;
    *.zip) echo zip ;;
    *) echo unknown ;;
  esac
}

# hello-1.0.tar.gz -> hello-1.0
strip_suffix() {
  case $1 in
    *.tar.gz | *.tar.bz2 | *.tar.xz) echo "${1%.*.*}" ;;
    *.tgz | *.tbz2 | *.tbz | *.txz | *.tar | *.zip) echo "${1%.*}" ;;
    *) echo "$1" ;;
  esac
}

# Appends a line of the agent's own to the package's output (it becomes part of the report).
note() { printf '%s\n' "$*" >>"$PKG_LOG"; }

# Runs a command with the package's output log and the install timeout; returns its status.
# "run_logged as_user CMD..." runs it as the session user, without privileges, with the user's HOME;
# "run_logged as_unpacker CMD..." as UNPACK_USER, who owns nothing but what it unpacks.
run_logged() {
  if [ "$1" = as_unpacker ]; then
    shift
    note "+ (as $UNPACK_USER) ${RUN_LABEL:-$*}"
    set -- env HOME=/ USER="$UNPACK_USER" LOGNAME="$UNPACK_USER" \
      setpriv --reuid="$UNPACK_UID" --regid="$UNPACK_GID" --clear-groups --no-new-privs -- "$@"
  elif [ "$1" = as_user ]; then
    shift
    note "+ (as $PKG_USER) ${RUN_LABEL:-$*}"
    if command -v setpriv >/dev/null 2>&1; then
      set -- env HOME="$PKG_HOME" USER="$PKG_USER" LOGNAME="$PKG_USER" \
        setpriv --reuid="$PKG_UID" --regid="$PKG_GID" --init-groups --no-new-privs -- "$@"
    elif command -v runuser >/dev/null 2>&1; then
      set -- env HOME="$PKG_HOME" USER="$PKG_USER" LOGNAME="$PKG_USER" runuser -u "$PKG_USER" -- "$@"
    else
      # shellcheck disable=SC2016 # $0 and $@ belong to the inner shell
      set -- su -s /bin/sh -c 'exec "$0" "$@"' "$PKG_USER" -- "$@"
    fi
  else
    note "+ ${RUN_LABEL:-$*}"
  fi
  RUN_LABEL=""
  if command -v timeout >/dev/null 2>&1; then
    timeout -k 10 "$INSTALL_TIMEOUT" "$@" </dev/null >>"$PKG_LOG" 2>&1
  else
    "$@" </dev/null >>"$PKG_LOG" 2>&1
  fi
  _status=$?
  [ "$_status" = 124 ] && note "(stopped after $INSTALL_TIMEOUT s: CODEBROWSE_INSTALL_TIMEOUT)"
  return "$_status"
}

# A path under DIR named NAME that does not exist yet (NAME, NAME-2, NAME-3, ...).
fresh_path() {
  _p="$1/$2"
  _n=2
  while [ -e "$_p" ] || [ -L "$_p" ]; do
    _p="$1/$2-$_n"
    _n=$((_n + 1))
  done
  printf '%s\n' "$_p"
}

decompressor() {
  case $1 in
    tar.gz) echo gzip ;;
    tar.bz2) echo bzip2 ;;
    tar.xz) echo xz ;;
    *) echo cat ;;
  esac
}

tar_flag() {
  case $1 in
    tar.gz) echo -z ;;
    tar.bz2) echo -j ;;
    tar.xz) echo -J ;;
    *) echo --no-auto-compress ;;
  esac
}

# Why an archive is refused: REFUSE_RULE (a short name) and REFUSE_DETAIL (for a human).
refuse() {
  REFUSE_RULE=$1
  REFUSE_DETAIL=$2
  return 1
}

# The records of an archive's listing, one a line: TYPE <TAB> SIZE <TAB> NAME [<TAB> LINK TARGET]
# TYPE: f file, d directory, l symlink, h hardlink, or the listing's own letter for anything else.
# Tar names stay C-quoted (tar --quoting-style=c), so no name can hold a tab or newline.
list_tar() { # FILE KIND MAXLINES
  { LC_ALL=C tar -t -v --numeric-owner --quoting-style=c "$(tar_flag "$2")" -f "$1" 2>"$WORK/list.err"
    echo $? >"$WORK/list.rc"; } | head -n "$3" | LC_ALL=C awk '
    function quoted(s) { # the C-quoted string at the start of s, without the quotes
      if (!match(s, /^"([^"\\]|\\.)*"/)) return ""
      q = substr(s, 2, RLENGTH - 2); qlen = RLENGTH
      return 1
    }
    {
      type = substr($1, 1, 1); size = $3
      rest = $0
      if (!match(rest, /"/)) { print "?\t0\t" $0; next }
      rest = substr(rest, RSTART)
      if (!quoted(rest)) { print "?\t0\t" rest; next }
      name = q; rest = substr(rest, qlen + 1); target = ""
      if (type == "l" && substr(rest, 1, 4) == " -> " && quoted(substr(rest, 5))) target = q
      if (type == "h" && substr(rest, 1, 9) == " link to " && quoted(substr(rest, 10))) target = q
      if (type == "-") type = "f"
      if (type != "f") size = 0
      printf "%s\t%s\t%s\t%s\n", type, size, name, target
    }'
}

# zipinfo -l: perms version os size tx csize method date time name; the name is the rest.
list_zip() { # FILE MAXLINES
  { LC_ALL=C unzip -Z -l "$1" 2>"$WORK/list.err"; echo $? >"$WORK/list.rc"; } |
    LC_ALL=C awk 'NR > 2 && NF >= 10 && $2 ~ /^[0-9]+\.[0-9]+$/ {
      type = substr($1, 1, 1); size = $4; name = $0
      sub(/^[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ /, "", name)
      if (type == "-") type = "f"
      if (type != "f") size = 0
      printf "%s\t%s\t%s\t\n", type, size, name
    }' | head -n "$2"
}

# unzip treats [ ] * ? as wildcards: escape everything that is not plain.
unzip_pattern() {
  printf '%s' "$1" | sed 's/[^A-Za-z0-9_./]/\\&/g'
}

# Fills in the targets of a zip's symlinks (stored as the entry's content).
zip_link_targets() { # FILE RECORDS > RECORDS
  while IFS="$TAB" read -r zl_type zl_size zl_name zl_target; do
    if [ "$zl_type" = l ]; then
      zl_target=$(LC_ALL=C unzip -p "$1" "$(unzip_pattern "$zl_name")" 2>/dev/null | head -c 4096 | tr '\t\n' '??')
      [ -n "$zl_target" ] || zl_target='?unreadable'
    fi
    printf '%s\t%s\t%s\t%s\n' "$zl_type" "$zl_size" "$zl_name" "$zl_target"
  done <"$2"
}

# The rules every entry must pass. Prints "RULE <TAB> detail" for the first entry that fails.
check_records() { # RECORDS MAXBYTES KIND
  LC_ALL=C awk -F '\t' -v max="$2" -v zip="$([ "$3" = zip ] && echo 1)" '
    function clean(p) { # "./a/./b" -> "a/b"; "" for the archive root
      if (zip) gsub(/\\/, "/", p) # unzip takes a backslash for a separator (archives made on Windows)
      while (sub(/^\.\//, "", p)) {}
      gsub(/\/\.\//, "/", p); gsub(/\/+/, "/", p)
      sub(/\/\.?$/, "", p)
      if (p == ".") p = ""
      return p
    }
    function has_parent(p,   n, k, c) {
      n = split(p, c, "/")
      for (k = 1; k <= n; k++) if (c[k] == "..") return 1
      return 0
    }
    # The first proper prefix of p (a directory on its way) that the archive makes a symlink.
    function via_link(p,   n, k, c, pre) {
      n = split(p, c, "/"); pre = ""
      for (k = 1; k < n; k++) {
        pre = (pre == "" ? c[k] : pre "/" c[k])
        if (pre in links) return pre
      }
      return ""
    }
    function joined(stack, depth,   k, out) {
      out = ""
      for (k = 1; k <= depth; k++) out = (out == "" ? stack[k] : out "/" stack[k])
      return out
    }
    # Where a symlink at p with target t points, relative to the archive root: "!" outside it,
    # "~" through another symlink of the archive (which a lexical walk cannot follow).
    function resolve(p, t,   n, k, c, depth, stack) {
      n = split(p, c, "/"); depth = 0
      for (k = 1; k < n; k++) stack[++depth] = c[k]
      n = split(t, c, "/")
      for (k = 1; k <= n; k++) {
        if (c[k] == "" || c[k] == ".") continue
        if (c[k] == "..") { if (depth == 0) return "!"; depth--; continue }
        stack[++depth] = c[k]
        if (k < n && (joined(stack, depth) in links)) return "~"
      }
      return joined(stack, depth)
    }
    function refuse(rule, detail) { printf "%s\t%s\n", rule, detail; bad = 1; exit }
    { type[NR] = $1; size[NR] = $2; raw[NR] = $3; target[NR] = $4; name[NR] = clean($3)
      if ($1 == "l") links[name[NR]] = 1
      if ($1 == "f") files[name[NR]] = 1 }
    END {
      if (bad) exit
      for (r = 1; r <= NR; r++) {
        p = name[r]; t = type[r]; shown = "\"" raw[r] "\""
        if (t == "?") refuse("unreadable", "a listing line tar or unzip printed that is not an entry: " raw[r])
        if (substr(raw[r], 1, 1) == "/" || raw[r] ~ /^[A-Za-z]:/) refuse("absolute-path", "entry " shown " has an absolute path")
        if (has_parent(p)) refuse("parent-dir", "entry " shown " has a .. component")
        if (t != "f" && t != "d" && t != "l" && t != "h")
          refuse("special-file", "entry " shown " is a device, fifo or socket (type " t ")")
        v = via_link(p)
        if (v != "") refuse("through-symlink", "entry " shown " goes through the symlink \"" v "\" of the same archive")
        if (t == "l") {
          if (target[r] == "" || target[r] ~ /^\?/) refuse("link-escape", "symlink " shown " has no readable target")
          if (substr(target[r], 1, 1) == "/") refuse("absolute-link", "symlink " shown " points to the absolute path \"" target[r] "\"")
          dest = resolve(p, clean(target[r]))
          if (dest == "!") refuse("link-escape", "symlink " shown " -> \"" target[r] "\" points outside the unpack directory")
          if (dest == "~") refuse("link-escape", "symlink " shown " -> \"" target[r] "\" points through another symlink of the archive")
        }
        if (t == "h") {
          h = clean(target[r])
          if (substr(target[r], 1, 1) == "/" || has_parent(h) || !(h in files) || via_link(h) != "")
            refuse("hardlink-escape", "hardlink " shown " -> \"" target[r] "\" is not a file of the same archive")
        }
        total += size[r]
        if (total > max) refuse("size", "the entries add up to more than " max " bytes (CODEBROWSE_ARCHIVE_MAX_BYTES / _RATIO)")
      }
    }' "$1"
}

# Checks an archive before anything is unpacked: returns 1 with REFUSE_RULE/REFUSE_DETAIL set when
# a rule refuses it. Sets ARCHIVE_CAP (the byte cap that applies to this archive).
check_archive() { # FILE KIND
  _file=$1
  _kind=$2
  _tool=$(decompressor "$_kind")
  [ "$_kind" = zip ] && _tool=unzip
  if [ "$_tool" != cat ] && ! command -v "$_tool" >/dev/null 2>&1; then
    refuse missing-tool "$_tool is not installed on this image, so a .$_kind cannot be unpacked"
    return 1
  fi
  command -v tar >/dev/null 2>&1 || { refuse missing-tool "tar is not installed on this image"; return 1; }
  _archive_bytes=$(wc -c <"$_file" | tr -d ' ')
  ARCHIVE_CAP=$((_archive_bytes * ARCHIVE_MAX_RATIO))
  [ "$ARCHIVE_CAP" -gt "$ARCHIVE_MAX_BYTES" ] && ARCHIVE_CAP=$ARCHIVE_MAX_BYTES
  # 1. The real uncompressed size, read as a stream that stops at the cap (a bomb costs at most
  #    the cap in CPU, never disk).
  case $_kind in
    zip) _bytes=$(unzip -p "$_file" 2>/dev/null </dev/null | head -c $((ARCHIVE_CAP + 1)) | wc -c | tr -d ' ') ;;
    *) _bytes=$("$_tool" -dc <"$_file" 2>/dev/null | head -c $((ARCHIVE_CAP + 1)) | wc -c | tr -d ' ') ;;
  esac
  [ "$_kind" = tar ] && _bytes=$_archive_bytes
  if [ "$_bytes" -gt "$ARCHIVE_CAP" ]; then
    refuse size "it unpacks to more than $ARCHIVE_CAP bytes (the smaller of CODEBROWSE_ARCHIVE_MAX_BYTES=$ARCHIVE_MAX_BYTES and ${ARCHIVE_MAX_RATIO}x its $_archive_bytes bytes)"
    return 1
  fi
  # 2. The listing: entry count, then the rules for each entry.
  _max_lines=$((ARCHIVE_MAX_ENTRIES + 1))
  case $_kind in
    zip)
      list_zip "$_file" "$_max_lines" >"$WORK/records.raw"
      zip_link_targets "$_file" "$WORK/records.raw" >"$WORK/records"
      ;;
    *) list_tar "$_file" "$_kind" "$_max_lines" >"$WORK/records" ;;
  esac
  _entries=$(wc -l <"$WORK/records" | tr -d ' ')
  if [ "$_entries" -gt "$ARCHIVE_MAX_ENTRIES" ]; then
    refuse entry-count "it has more than $ARCHIVE_MAX_ENTRIES entries (CODEBROWSE_ARCHIVE_MAX_ENTRIES)"
    return 1
  fi
  _rc=$(cat "$WORK/list.rc" 2>/dev/null)
  if [ "$_rc" != 0 ]; then
    refuse unreadable "listing it failed (exit ${_rc:-?}): $(tail -c 300 "$WORK/list.err")"
    return 1
  fi
  _verdict=$(check_records "$WORK/records" "$ARCHIVE_CAP" "$_kind")
  if [ -n "$_verdict" ]; then
    refuse "${_verdict%%"$TAB"*}" "${_verdict#*"$TAB"}"
    return 1
  fi
  return 0
}

# Unpacks as the session user into DIR (fresh, owned by the user), with a file-size limit.
extract_archive() { # FILE KIND DIR
  _blocks=$((ARCHIVE_CAP / 512 + 1))
  # shellcheck disable=SC2016 # the inner shell expands its own arguments
  case $2 in
    zip)
      # Exit 1 is "warnings only"; the checks before and after decide.
      RUN_LABEL="unzip -q -n $1 -d $3 (file size limit $_blocks blocks)"
      run_logged as_unpacker sh -c 'ulimit -f "$1" && cd "$2" && exec unzip -q -n "$3"' sh "$_blocks" "$3" "$1"
      [ $? -le 1 ]
      ;;
    *)
      RUN_LABEL="tar -x $(tar_flag "$2") -f $1 -C $3 --no-same-owner --no-same-permissions ... (file size limit $_blocks blocks)"
      run_logged as_unpacker sh -c 'ulimit -f "$1" && exec tar -x "$2" -f "$3" -C "$4" -m \
        --no-same-owner --no-same-permissions --no-overwrite-dir --no-acls --no-xattrs --no-selinux' \
        sh "$_blocks" "$(tar_flag "$2")" "$1" "$3"
      ;;
  esac
}

# After unpacking: nothing special, no link out of DIR, no hardlink to a file outside it, no
# more bytes than the cap, and no file of UNPACK_UID's outside DIR changed since MARKER.
check_unpacked() { # DIR MARKER
  _special=$(find -P "$1" \( -type b -o -type c -o -type p -o -type s \) -print 2>/dev/null | head -n 1)
  [ -z "$_special" ] || { refuse special-file "unpacking made the special file $_special"; return 1; }
  _canon=$(realpath -- "$1")
  _escape=$(find -P "$1" -type l -exec sh -c '
      for l do
        r=$(realpath -m -- "$l") || { echo "$l"; exit; }
        case $r in "$0" | "$0"/*) ;; *) printf "%s -> %s\n" "$l" "$(readlink -- "$l")"; exit ;; esac
      done' "$_canon" {} + 2>/dev/null | head -n 1)
  [ -z "$_escape" ] || { refuse link-escape "after unpacking, $_escape points outside $1"; return 1; }
  # A file with more links than names inside DIR shares its inode with a file elsewhere.
  _shared=$(find -P "$1" -type f -links +1 -printf '%i %n\n' 2>/dev/null | sort | uniq -c |
    awk '$1 < $3 { print "inode " $2; exit }')
  [ -z "$_shared" ] || { refuse hardlink-escape "after unpacking, $_shared is linked from outside $1"; return 1; }
  _used=$(du -s -B1 "$1" 2>/dev/null | cut -f1)
  [ "${_used:-0}" -le "$ARCHIVE_CAP" ] || { refuse size "unpacked it takes $_used bytes, more than $ARCHIVE_CAP"; return 1; }
  _outside=$(for _d in / /tmp /var/tmp /dev/shm /run; do
    [ -d "$_d" ] && find -P "$_d" -xdev \( -path "$1" -o -path /proc -o -path /sys \) -prune -o \
      -user "$UNPACK_UID" -cnewer "$2" -print 2>/dev/null
  done | head -n 1)
  [ -z "$_outside" ] || { refuse outside-write "while unpacking, $_outside changed outside $1"; return 1; }
  return 0
}

# The directory the build steps run in: the unpack dir, or its only entry when that is a directory.
source_dir() {
  _only=""
  _count=0
  for _e in "$1"/* "$1"/.[!.]* "$1"/..?*; do
    [ -e "$_e" ] || [ -L "$_e" ] || continue
    _count=$((_count + 1))
    _only=$_e
  done
  if [ "$_count" = 1 ] && [ -d "$_only" ] && [ ! -L "$_only" ]; then
    printf '%s\n' "$_only"
  else
    printf '%s\n' "$1"
  fi
}

# The package's own install steps (its codebrowse.yaml's "install", or given inline in the session),
# files 0, 1, ... in PKG_STEPS_DIR: each runs as root in DIR, in order; the first that fails stops.
# Sets PKG_STEP to the step that ran last.
run_install_steps() { # DIR
  _i=0
  while [ -f "$PKG_STEPS_DIR/$_i" ]; do
    PKG_STEP="install step $((_i + 1)) ($(head -c 200 "$PKG_STEPS_DIR/$_i" | tr '\n' ' '))"
    RUN_LABEL="(in $1) $(cat "$PKG_STEPS_DIR/$_i")"
    (cd "$1" && run_logged sh "$PKG_STEPS_DIR/$_i") || return
    _i=$((_i + 1))
  done
  return 0
}

# The build steps for an unpacked source dir. Sets PKG_STEP to the step that ran last.
build_unpacked() { # FILE DIR
  _src=$2
  if [ -n "${PKG_STEPS_DIR:-}" ]; then
    run_install_steps "$_src"
    return
  fi
  if [ -f "$_src/codebrowse-install.sh" ]; then
    PKG_STEP=codebrowse-install.sh
    (cd "$_src" && run_logged sh ./codebrowse-install.sh)
    return
  fi
  if [ -f "$_src/configure" ]; then
    PKG_STEP=configure
    if [ -x "$_src/configure" ]; then
      (cd "$_src" && run_logged as_user ./configure) || return
    else
      (cd "$_src" && run_logged as_user sh ./configure) || return
    fi
    PKG_STEP="make"
    (cd "$_src" && run_logged as_user make) || return
    PKG_STEP="make install"
    (cd "$_src" && run_logged make install)
    return
  fi
  if [ -f "$_src/Makefile" ] || [ -f "$_src/makefile" ] || [ -f "$_src/GNUmakefile" ]; then
    PKG_STEP="make"
    (cd "$_src" && run_logged as_user make) || return
    PKG_STEP="make install"
    (cd "$_src" && run_logged make install)
    return
  fi
  if [ -f "$_src/install.sh" ]; then
    PKG_STEP=install.sh
    (cd "$_src" && run_logged sh ./install.sh)
    return
  fi
  PKG_STEP=""
  note "nothing to build: no codebrowse-install.sh, configure, Makefile or install.sh at the top level"
  return 0
}

# The user that unpacks archives: a system user of its own, so that everything it owns is what it
# unpacked (the check for writes outside the unpack dir looks for its files), and it can write
# nowhere else.
ensure_unpack_user() {
  if ! id "$UNPACK_USER" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
      --comment "codebrowse archive unpacker" "$UNPACK_USER" || return 1
  fi
  UNPACK_UID=$(id -u "$UNPACK_USER") UNPACK_GID=$(id -g "$UNPACK_USER")
}

install_archive() { # FILE NAME INDEX KIND
  WORK=$(dirname "$1")
  if ! check_archive "$1" "$4"; then
    note "refused by the archive rule $REFUSE_RULE: $REFUSE_DETAIL"
    PKG_SUMMARY="refused by the archive rule $REFUSE_RULE: $REFUSE_DETAIL"
    return
  fi
  if ! ensure_unpack_user; then
    PKG_SUMMARY="could not make the system user $UNPACK_USER that unpacks archives"
    return
  fi
  # Unpacked first in a staging dir of the unpacker's (the home may be closed to it), checked
  # there, then moved into the home and given to the user.
  _stage="$WORK/unpack"
  rm -rf -- "$_stage"
  mkdir -m 0700 -- "$_stage" && chown "$UNPACK_UID:$UNPACK_GID" -- "$_stage"
  chmod 0644 "$1"
  _marker="$WORK/unpack.marker"
  rm -f "$_marker" && touch "$_marker"
  # The cnewer check compares change times, which tick coarsely: let the clock move past the marker.
  sleep 0.05 2>/dev/null || sleep 1
  extract_archive "$1" "$4" "$_stage"
  _status=$?
  if [ "$_status" != 0 ]; then
    rm -rf -- "$_stage"
    PKG_EXIT=$_status
    PKG_SUMMARY="unpacking failed (exit $_status)"
    return
  fi
  if ! check_unpacked "$_stage" "$_marker"; then
    rm -rf -- "$_stage"
    note "refused by the archive rule $REFUSE_RULE: $REFUSE_DETAIL"
    PKG_SUMMARY="refused by the archive rule $REFUSE_RULE: $REFUSE_DETAIL"
    return
  fi
  # A crash half-way left an unpack dir of ours in the home: it goes, and this one takes its place.
  _dir=$(cat "$PKG_STATE" 2>/dev/null)
  if [ -n "$_dir" ] && [ -d "$_dir" ]; then
    rm -rf -- "$_dir"
  else
    _dir=$(fresh_path "$PKG_HOME" "$(strip_suffix "$2")")
  fi
  printf '%s\n' "$_dir" >"$PKG_STATE"
  chmod 0755 "$_stage"
  if ! mv -- "$_stage" "$_dir" || ! chown -R -h "$PKG_UID:$PKG_GID" -- "$_dir"; then
    rm -rf -- "$_stage"
    PKG_SUMMARY="could not move the unpacked files to $_dir"
    return
  fi
  note "unpacked into $_dir"
  _src=$(source_dir "$_dir")
  build_unpacked "$1" "$_src"
  _status=$?
  # Root's build steps may have left root-owned files; the tree is the user's (-h: links not followed).
  chown -R -h "$PKG_UID:$PKG_GID" -- "$_dir"
  if [ -z "$PKG_STEP" ]; then
    PKG_INSTALLED=true PKG_EXIT=0 PKG_SUMMARY="unpacked into $_dir (nothing to build)"
  elif [ "$_status" = 0 ]; then
    PKG_INSTALLED=true PKG_EXIT=0 PKG_SUMMARY="unpacked into $_dir; $PKG_STEP succeeded"
  else
    PKG_EXIT=$_status PKG_SUMMARY="unpacked into $_dir; $PKG_STEP exited $_status"
  fi
}

install_deb() { # FILE
  command -v dpkg >/dev/null 2>&1 || { PKG_SUMMARY="dpkg not available on this image"; return; }
  _pkg=$(dpkg-deb -f "$1" Package 2>/dev/null)
  run_logged env DEBIAN_FRONTEND=noninteractive dpkg -i "$1"
  _status=$?
  if [ "$_status" != 0 ]; then
    # Missing dependencies: apt can fetch them only when it has package lists (a mirror).
    if command -v apt-get >/dev/null 2>&1 && ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
      run_logged env DEBIAN_FRONTEND=noninteractive apt-get -f install -y
      _fix=$?
      if [ -n "$_pkg" ] && dpkg-query -W -f='${Status}' "$_pkg" 2>/dev/null | grep -q ' installed$'; then
        PKG_INSTALLED=true PKG_EXIT=0 PKG_SUMMARY="dpkg -i exited $_status; apt-get -f install fixed it"
        return
      fi
      note "apt-get -f install exited $_fix and did not install $_pkg"
    else
      note "no apt package lists on this image: dependencies cannot be fetched"
    fi
    PKG_EXIT=$_status PKG_SUMMARY="dpkg -i exited $_status"
    return
  fi
  PKG_INSTALLED=true PKG_EXIT=0 PKG_SUMMARY="dpkg -i installed ${_pkg:-the package}"
}

install_rpm() { # FILE
  if ! command -v rpm >/dev/null 2>&1; then
    note "rpm not available on this image"
    PKG_SUMMARY="rpm not available on this image"
    return
  fi
  run_logged rpm -i "$1"
  _status=$?
  PKG_EXIT=$_status
  if [ "$_status" = 0 ]; then
    PKG_INSTALLED=true PKG_SUMMARY="rpm -i succeeded"
  else
    PKG_SUMMARY="rpm -i exited $_status"
  fi
}

install_package() { # FILE NAME INDEX
  PKG_INSTALLED=false PKG_EXIT="" PKG_SUMMARY="" PKG_STEP=""
  _kind=$(package_kind "$2")
  note "package $3: $2 ($_kind)"
  # Its own install steps replace the rule of a file that is not an archive (an archive is unpacked
  # first, and the steps run in it).
  if [ -n "${PKG_STEPS_DIR:-}" ]; then
    case $_kind in
      deb | rpm | unknown)
        run_install_steps "$(dirname "$1")"
        _status=$?
        PKG_EXIT=$_status
        if [ "$_status" = 0 ]; then
          PKG_INSTALLED=true PKG_SUMMARY="its install steps succeeded"
        else
          PKG_SUMMARY="$PKG_STEP exited $_status"
        fi
        return
        ;;
    esac
  fi
  case $_kind in
    deb) install_deb "$1" ;;
    rpm) install_rpm "$1" ;;
    unknown)
      note "no install rule for this file type: it is left in $PKG_HOME"
      PKG_SUMMARY="no install rule for this file type (known: .deb .rpm .tar.gz .tgz .tar.bz2 .tar.xz .zip)"
      ;;
    *) install_archive "$1" "$2" "$3" "$_kind" ;;
  esac
}
