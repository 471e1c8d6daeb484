// Package filename names a downloaded package file as the portal does (packageFileName in
// operator/src/portal/agent-api.ts): the suffix of that name picks the install rule, so both sides
// must agree for any URL. The portal runs the WHATWG URL parser and decodeURIComponent; this is the
// part of them that decides the last path segment.
package filename

import (
	"strings"
	"unicode/utf8"
)

// FromURL is the file name of the package at rawURL: the last segment of the URL's path,
// percent-decoded, each character outside [A-Za-z0-9._+~-] (each UTF-16 unit of it) made "_",
// leading dots and dashes dropped, the last 128 kept; "package-<index>" when nothing usable is left.
func FromURL(rawURL string, index string) string {
	segment, ok := lastSegment(rawURL)
	if !ok {
		return fallback(index)
	}
	decoded, ok := percentDecode(segment)
	if !ok {
		return fallback(index)
	}
	return finish(decoded, index)
}

// FromName makes a name the manifest gives ("filename") safe again: the same characters, no
// decoding and no path (a "/" becomes "_" like any other character outside the safe set).
func FromName(name string, index string) string {
	return finish(name, index)
}

func fallback(index string) string { return "package-" + index }

func safeASCII(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '+' || c == '~' || c == '-'
}

// finish maps text to the safe set (invalid UTF-8: nothing usable, as a JavaScript string cannot
// hold it), drops leading dots and dashes, keeps the last 128 and falls back when nothing is left.
func finish(text string, index string) string {
	if !utf8.ValidString(text) {
		return fallback(index)
	}
	var b strings.Builder
	for _, r := range text {
		switch {
		case r < utf8.RuneSelf && safeASCII(byte(r)):
			b.WriteRune(r)
		case r > 0xFFFF:
			b.WriteString("__") // two UTF-16 units
		default:
			b.WriteByte('_')
		}
	}
	out := strings.TrimLeft(b.String(), ".-")
	if len(out) > 128 {
		out = out[len(out)-128:]
	}
	if strings.Trim(out, "_") == "" {
		return fallback(index)
	}
	return out
}

var specialSchemes = map[string]bool{"http": true, "https": true, "ftp": true, "ws": true, "wss": true, "file": true}

// lastSegment is what `new URL(u).pathname` ends with after its last "/", still percent-encoded;
// false when the URL parser would throw.
func lastSegment(u string) (string, bool) {
	// The URL parser trims C0 controls and spaces at both ends and drops tabs and line breaks.
	u = strings.TrimFunc(u, func(r rune) bool { return r <= ' ' })
	u = strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' {
			return -1
		}
		return r
	}, u)
	colon := strings.IndexByte(u, ':')
	if colon < 1 || !validScheme(u[:colon]) {
		return "", false
	}
	scheme := strings.ToLower(u[:colon])
	rest := u[colon+1:]
	special := specialSchemes[scheme]
	if special {
		rest = strings.ReplaceAll(rest, `\`, "/")
	}
	if cut := strings.IndexAny(rest, "?#"); cut >= 0 {
		rest = rest[:cut]
	}
	switch {
	case special && scheme != "file":
		// Any number of slashes, then the authority (which must be a host) up to the next "/".
		rest = strings.TrimLeft(rest, "/")
		end := strings.IndexByte(rest, '/')
		authority := rest
		if end >= 0 {
			authority, rest = rest[:end], rest[end:]
		} else {
			rest = ""
		}
		if !validAuthority(authority) {
			return "", false
		}
	case strings.HasPrefix(rest, "//"):
		rest = rest[2:]
		if end := strings.IndexByte(rest, '/'); end >= 0 {
			rest = rest[end:]
		} else {
			rest = ""
		}
	}
	return rest[strings.LastIndexByte(rest, '/')+1:], true
}

func validScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
		if i == 0 && !letter || i > 0 && !letter && !(c >= '0' && c <= '9') && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// validAuthority: a host the URL parser takes (not empty, no forbidden code point) and a port of
// digits up to 65535. Internationalised names are left to the parser's mercy: taken as they are.
func validAuthority(a string) bool {
	if at := strings.LastIndexByte(a, '@'); at >= 0 {
		a = a[at+1:]
	}
	host, port := a, ""
	if strings.HasPrefix(a, "[") {
		end := strings.IndexByte(a, ']')
		if end < 0 {
			return false
		}
		host, port = a[:end+1], strings.TrimPrefix(a[end+1:], ":")
		if len(a) > end+1 && a[end+1] != ':' {
			return false
		}
	} else if colon := strings.LastIndexByte(a, ':'); colon >= 0 {
		host, port = a[:colon], a[colon+1:]
	}
	if host == "" || len(port) > 5 {
		return false
	}
	value := 0
	for i := 0; i < len(port); i++ {
		if port[i] < '0' || port[i] > '9' {
			return false
		}
		value = value*10 + int(port[i]-'0')
	}
	if value > 65535 {
		return false
	}
	if strings.HasPrefix(host, "[") {
		return true
	}
	return !strings.ContainsAny(host, " \x00#/:<>?@[\\]^|%")
}

// percentDecode is decodeURIComponent: false on a malformed escape; the UTF-8 check is finish's.
func percentDecode(s string) (string, bool) {
	if !strings.Contains(s, "%") {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	return b.String(), true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
