// Package report writes the JSON bodies the agent posts to the portal. Text from an install's
// output is any bytes: it is quoted as the shell agent's json_quote did, so the body is always
// valid UTF-8 JSON that the portal's strict parser takes (NUL bytes dropped, each byte that is not
// part of valid UTF-8 turned into U+FFFD, every control character escaped).
package report

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Quote is text as a JSON string literal.
func Quote(text []byte) string {
	var b strings.Builder
	b.Grow(len(text) + 2)
	b.WriteByte('"')
	for i := 0; i < len(text); {
		c := text[i]
		switch {
		case c == 0:
			i++
			continue
		case c == '"':
			b.WriteString(`\"`)
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\r':
			b.WriteString(`\r`)
		case c < 0x20:
			fmt.Fprintf(&b, `\u%04x`, c)
		case c < utf8.RuneSelf:
			b.WriteByte(c)
		default:
			r, size := utf8.DecodeRune(text[i:])
			if r == utf8.RuneError && size <= 1 {
				b.WriteString(`\ufffd`)
				i++
				continue
			}
			b.Write(text[i : i+size])
			i += size
			continue
		}
		i++
	}
	b.WriteByte('"')
	return b.String()
}

// Package is the body of POST /agent/v1/report. exitCode nil: no command decided (the field is
// left out).
func Package(index string, installed bool, exitCode *int, message []byte) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"package":%s,"installed":%t`, index, installed)
	if exitCode != nil {
		fmt.Fprintf(&b, `,"exitCode":%d`, *exitCode)
	}
	b.WriteString(`,"message":`)
	b.WriteString(Quote(message))
	b.WriteByte('}')
	return []byte(b.String())
}

// DoneMessageBytes is how much of the done message is sent (the portal keeps 1024 characters).
const DoneMessageBytes = 1000

// Done is the body of POST /agent/v1/done; the message is cut to DoneMessageBytes (at a
// character's start).
func Done(installed bool, message string) []byte {
	if len(message) > DoneMessageBytes {
		cut := DoneMessageBytes
		for cut > 0 && !utf8.RuneStart(message[cut]) {
			cut--
		}
		message = message[:cut]
	}
	return []byte(fmt.Sprintf(`{"installed":%t,"message":%s}`, installed, Quote([]byte(message))))
}

// Result is the body of POST /agent/v1/result, a test run's outcome.
func Result(exitCode int, timedOut bool, durationMs int64, startedAt string, outputBytes int64, output []byte) []byte {
	return []byte(fmt.Sprintf(`{"exitCode":%d,"timedOut":%t,"durationSeconds":%d.%03d,"startedAt":%s,"outputBytes":%d,"output":%s}`,
		exitCode, timedOut, durationMs/1000, durationMs%1000, Quote([]byte(startedAt)), outputBytes, Quote(output)))
}
