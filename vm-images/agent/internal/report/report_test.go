package report

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestQuoteMakesJSONOfAnyBytes(t *testing.T) {
	cases := map[string]string{
		"plain":                 `"plain"`,
		"q\"b\\n\nt\tr\r":       `"q\"b\\n\nt\tr\r"`,
		"\x01\x1f\x7f":          `"\u0001\u001f` + "\x7f" + `"`,
		"nul\x00dropped":        `"nuldropped"`,
		"é😀":                    `"é😀"`,
		"bad\xff\xfe!":          `"bad\ufffd\ufffd!"`,
		"cut\xe2\x82":           `"cut\ufffd\ufffd"`,
		"\xed\xa0\x80surrogate": `"\ufffd\ufffd\ufffdsurrogate"`,
	}
	for in, want := range cases {
		got := Quote([]byte(in))
		if got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
		if !utf8.ValidString(got) || !json.Valid([]byte(got)) {
			t.Errorf("Quote(%q) is not valid JSON", in)
		}
	}
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	var s string
	if err := json.Unmarshal([]byte(Quote(all)), &s); err != nil {
		t.Fatal(err)
	}
}

func TestBodies(t *testing.T) {
	three := 3
	if got := string(Package("2", false, &three, []byte("configure: error\n"))); got != `{"package":2,"installed":false,"exitCode":3,"message":"configure: error\n"}` {
		t.Error(got)
	}
	if got := string(Package("0", true, nil, nil)); got != `{"package":0,"installed":true,"message":""}` {
		t.Error(got)
	}
	long := ""
	for len(long) < 1200 {
		long += "é"
	}
	var done struct {
		Installed bool
		Message   string
	}
	if err := json.Unmarshal(Done(true, long), &done); err != nil || !done.Installed || len(done.Message) > DoneMessageBytes || !utf8.ValidString(done.Message) {
		t.Errorf("done: %v %d", err, len(done.Message))
	}
	var result map[string]any
	if err := json.Unmarshal(Result(3, false, 12345, "2030-01-01T00:00:00Z", 10, []byte("out\xff")), &result); err != nil {
		t.Fatal(err)
	}
	if result["exitCode"] != 3.0 || result["timedOut"] != false || result["durationSeconds"] != 12.345 || result["outputBytes"] != 10.0 || result["output"] != "out\ufffd" {
		t.Errorf("%v", result)
	}
}
