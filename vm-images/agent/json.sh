# JSON for the guest agent, in POSIX sh + awk (mawk, gawk and busybox awk), sourced by
# codebrowse-agent.sh. The guest has no jq, python or node; see vm-images/README.md for why this
# is awk and not sed: awk can check the whole grammar and reject a half-read manifest.
#
#   json_flatten < doc.json > doc.flat    one line per scalar: PATH <TAB> TYPE <TAB> RAW
#                                         PATH: keys and array indexes joined by "." (packages.0.url)
#                                         TYPE: s string, n number, b boolean, z null, o {} , a []
#                                         RAW: a string's JSON text without its quotes, still escaped
#                                         Exits 1 (message on stderr) when the text is not JSON.
#   json_get doc.flat PATH                the decoded value (strings unescaped, \uXXXX as UTF-8);
#                                         exits 1 when PATH is absent or null
#   json_count doc.flat PATH              the length of the array at PATH (0 when absent)
#   json_quote < text                     the text as a JSON string literal ("..." with escapes),
#                                         always valid UTF-8

json_flatten() {
  LC_ALL=C awk '
    function fail(msg) {
      printf "json: %s at offset %d\n", msg, i > "/dev/stderr"
      bad = 1
      return 0
    }
    function ws() {
      if (match(substr(s, i, 64), /^[ \t\r\n]+/)) {
        i += RLENGTH
        if (RLENGTH == 64) ws()
      }
    }
    # A string at s[i] (a quote): its raw text without the quotes goes to tok.
    function str(   rest) {
      rest = substr(s, i)
      if (!match(rest, /^"([^"\\]|\\.)*"/)) return fail("unterminated string")
      tok = substr(rest, 2, RLENGTH - 2)
      if (index(tok, "\n")) return fail("a raw newline in a string")
      i += RLENGTH
      return 1
    }
    function emit(path, type, value) {
      printf "%s\t%s\t%s\n", path, type, value
    }
    function value(path, depth,    c, key, n, rest) {
      if (depth > 64) return fail("nested too deep")
      ws()
      c = substr(s, i, 1)
      if (c == "{") {
        i++; ws()
        if (substr(s, i, 1) == "}") { i++; emit(path, "o", ""); return 1 }
        for (;;) {
          ws()
          if (substr(s, i, 1) != "\"") return fail("expected a key")
          if (!str()) return 0
          key = tok
          ws()
          if (substr(s, i, 1) != ":") return fail("expected :")
          i++
          if (!value(path == "" ? key : path "." key, depth + 1)) return 0
          ws()
          c = substr(s, i, 1); i++
          if (c == "}") return 1
          if (c != ",") return fail("expected , or }")
        }
      }
      if (c == "[") {
        i++; ws()
        if (substr(s, i, 1) == "]") { i++; emit(path, "a", ""); return 1 }
        for (n = 0; ; n++) {
          if (!value(path == "" ? n : path "." n, depth + 1)) return 0
          ws()
          c = substr(s, i, 1); i++
          if (c == "]") return 1
          if (c != ",") return fail("expected , or ]")
        }
      }
      if (c == "\"") {
        if (!str()) return 0
        emit(path, "s", tok)
        return 1
      }
      rest = substr(s, i, 64)
      if (match(rest, /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/)) {
        emit(path, "n", substr(rest, 1, RLENGTH)); i += RLENGTH; return 1
      }
      if (substr(rest, 1, 4) == "true") { emit(path, "b", "true"); i += 4; return 1 }
      if (substr(rest, 1, 5) == "false") { emit(path, "b", "false"); i += 5; return 1 }
      if (substr(rest, 1, 4) == "null") { emit(path, "z", ""); i += 4; return 1 }
      return fail("unexpected character")
    }
    { s = s $0 "\n" }
    END {
      i = 1
      if (!value("", 0)) exit 1
      ws()
      if (i <= length(s)) { fail("trailing text"); exit 1 }
      if (bad) exit 1
    }'
}

# Decodes the RAW form of json_flatten (one line per value) to bytes.
_json_decode_awk='
  function hexval(h,   k, v, d) {
    v = 0
    for (k = 1; k <= length(h); k++) {
      d = index("0123456789abcdef", tolower(substr(h, k, 1)))
      if (d == 0) return -1
      v = v * 16 + d - 1
    }
    return v
  }
  function utf8(cp) {
    if (cp < 128) return sprintf("%c", cp)
    if (cp < 2048) return sprintf("%c%c", 192 + int(cp / 64), 128 + cp % 64)
    if (cp < 65536) return sprintf("%c%c%c", 224 + int(cp / 4096), 128 + int(cp / 64) % 64, 128 + cp % 64)
    return sprintf("%c%c%c%c", 240 + int(cp / 262144), 128 + int(cp / 4096) % 64, 128 + int(cp / 64) % 64, 128 + cp % 64)
  }
  function decode(t,   out, k, c, cp, lo) {
    out = ""
    while ((k = index(t, "\\")) > 0) {
      out = out substr(t, 1, k - 1)
      c = substr(t, k + 1, 1)
      t = substr(t, k + 2)
      if (c == "n") out = out "\n"
      else if (c == "t") out = out "\t"
      else if (c == "r") out = out "\r"
      else if (c == "b") out = out "\b"
      else if (c == "f") out = out "\f"
      else if (c == "u") {
        cp = hexval(substr(t, 1, 4)); t = substr(t, 5)
        if (cp >= 55296 && cp < 56320 && substr(t, 1, 2) == "\\u") {
          lo = hexval(substr(t, 3, 4))
          if (lo >= 56320 && lo < 57344) { cp = 65536 + (cp - 55296) * 1024 + (lo - 56320); t = substr(t, 7) }
        }
        if (cp > 0) out = out utf8(cp)
      } else out = out c
    }
    return out t
  }
'

json_get() {
  LC_ALL=C awk -F '\t' -v want="$2" "$_json_decode_awk"'
    $1 == want && $2 != "z" && $2 != "o" && $2 != "a" { printf "%s", ($2 == "s" ? decode($3) : $3); found = 1; exit }
    END { exit found ? 0 : 1 }' "$1"
}

json_count() {
  LC_ALL=C awk -F '\t' -v want="$2" '
    index($1, want ".") == 1 {
      rest = substr($1, length(want) + 2)
      sub(/\..*/, "", rest)
      if (rest ~ /^[0-9]+$/ && rest + 1 > n) n = rest + 1
    }
    END { print n + 0 }' "$1"
}

json_quote() {
  # NUL bytes cannot travel in JSON text from sh: they are dropped. Bytes that are not UTF-8 become
  # U+FFFD. The "." after the text lets awk tell whether the text ended in a line break.
  { tr -d '\000'; printf '.'; } | LC_ALL=C awk '
    # The length of the valid UTF-8 sequence at the start of t (0: not valid).
    function utf8len(t,   b, len, lo, hi, j, x) {
      b = ord[substr(t, 1, 1)]
      if (b >= 194 && b <= 223) len = 2
      else if (b >= 224 && b <= 239) len = 3
      else if (b >= 240 && b <= 244) len = 4
      else return 0
      lo = 128; hi = 191
      if (b == 224) lo = 160
      if (b == 237) hi = 159
      if (b == 240) lo = 144
      if (b == 244) hi = 143
      for (j = 1; j < len; j++) {
        x = ord[substr(t, j + 1, 1)]
        if (x < (j == 1 ? lo : 128) || x > (j == 1 ? hi : 191)) return 0
      }
      return len
    }
    function emit(line,   c, n) {
      while (match(line, /[\001-\037"\\\200-\377]/)) {
        printf "%s", substr(line, 1, RSTART - 1)
        line = substr(line, RSTART)
        c = substr(line, 1, 1)
        if (c in code) { printf "%s", code[c]; line = substr(line, 2); continue }
        n = utf8len(line)
        if (n) { printf "%s", substr(line, 1, n); line = substr(line, n + 1) }
        else { printf "\\ufffd"; line = substr(line, 2) }
      }
      printf "%s", line
    }
    BEGIN { for (c = 1; c < 256; c++) ord[sprintf("%c", c)] = c
            for (c = 1; c < 32; c++) code[sprintf("%c", c)] = sprintf("\\u%04x", c)
            code["\n"] = "\\n"; code["\t"] = "\\t"; code["\r"] = "\\r"; code["\""] = "\\\""; code["\\"] = "\\\\"
            printf "\"" }
    NR > 1 { emit(prev); printf "\\n" }
    { prev = $0 }
    END { emit(substr(prev, 1, length(prev) - 1)); printf "\"" }'
}
