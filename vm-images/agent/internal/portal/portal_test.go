package portal

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"
)

type fake struct {
	mu      sync.Mutex
	answers []func(w http.ResponseWriter, r *http.Request)
	seen    []string
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.seen = append(f.seen, r.Method+" "+r.URL.String()+" "+r.Header.Get("Authorization"))
	answer := f.answers[0]
	if len(f.answers) > 1 {
		f.answers = f.answers[1:]
	}
	f.mu.Unlock()
	answer(w, r)
}

func status(code int, headers ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.WriteHeader(code)
	}
}

func client(t *testing.T, f *fake) (*Client, *[]time.Duration) {
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	var slept []time.Duration
	c := New(srv.URL+"/", "tok", func(string, ...any) {})
	c.Sleep = func(_ context.Context, d time.Duration) { slept = append(slept, d) }
	return c, &slept
}

func TestTheManifestIsLongPolledWithTheToken(t *testing.T) {
	f := &fake{answers: []func(http.ResponseWriter, *http.Request){
		status(204),
		func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"session":"a/b"}`))
		},
	}}
	c, _ := client(t, f)
	if r := c.Manifest(context.Background(), LongPoll); r.Status != 204 {
		t.Fatalf("%+v", r)
	}
	r := c.Manifest(context.Background(), LongPoll)
	if r.Status != 200 || string(r.Body) != `{"session":"a/b"}` || r.Date == "" {
		t.Fatalf("%+v", r)
	}
	if f.seen[0] != "GET /agent/v1/manifest?wait=30 Bearer tok" {
		t.Fatalf("%v", f.seen)
	}
}

func TestAPostHonoursRetryAfterAndBacksOff(t *testing.T) {
	f := &fake{answers: []func(http.ResponseWriter, *http.Request){
		status(429, "Retry-After", "7"), status(503), status(409), status(204),
	}}
	c, slept := client(t, f)
	if err := c.Post(context.Background(), "/agent/v1/report", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if want := []time.Duration{7 * time.Second, 2 * time.Second, 4 * time.Second}; !reflect.DeepEqual(*slept, want) {
		t.Fatalf("slept %v, want %v", *slept, want)
	}
}

func TestAPostGivesUpAfterTenTriesOrARefusal(t *testing.T) {
	f := &fake{answers: []func(http.ResponseWriter, *http.Request){status(500)}}
	c, slept := client(t, f)
	if err := c.Post(context.Background(), "/agent/v1/done", []byte(`{}`)); err == nil {
		t.Fatal("taken")
	}
	if len(f.seen) != 10 || len(*slept) != 9 || (*slept)[8] != 30*time.Second {
		t.Fatalf("%d tries, slept %v", len(f.seen), *slept)
	}
	f = &fake{answers: []func(http.ResponseWriter, *http.Request){status(400)}}
	c, _ = client(t, f)
	if err := c.Post(context.Background(), "/agent/v1/done", []byte(`{}`)); err == nil || len(f.seen) != 1 {
		t.Fatalf("%v after %d tries", err, len(f.seen))
	}
}

func TestADownloadIsHashedAndRetried(t *testing.T) {
	body := []byte("package bytes")
	f := &fake{answers: []func(http.ResponseWriter, *http.Request){
		status(429, "Retry-After", "3"),
		func(w http.ResponseWriter, r *http.Request) { w.Write(body) },
	}}
	c, slept := client(t, f)
	file := filepath.Join(t.TempDir(), "p")
	d := c.Download(context.Background(), c.Base+"/agent/v1/packages/0", true, file)
	sum := sha256.Sum256(body)
	if d.Err != nil || d.Status != 200 || d.Bytes != int64(len(body)) || d.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("%+v", d)
	}
	if got, _ := os.ReadFile(file); string(got) != string(body) {
		t.Fatalf("%q", got)
	}
	if !reflect.DeepEqual(*slept, []time.Duration{3 * time.Second}) {
		t.Fatalf("slept %v", *slept)
	}
	// Straight from the URL: no token.
	f.answers = []func(http.ResponseWriter, *http.Request){status(404)}
	d = c.Download(context.Background(), c.Base+"/elsewhere", false, file)
	if d.Status != 404 || f.seen[len(f.seen)-1] != "GET /elsewhere " {
		t.Fatalf("%+v %v", d, f.seen)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatal("a failed download left its file")
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for h, want := range map[string]time.Duration{"": 0, "5": 5 * time.Second, "-1": 0, "soon": 0,
		"Tue, 01 Jan 2030 00:00:09 GMT": 9 * time.Second} {
		if got := RetryAfter(h, now); got != want {
			t.Errorf("%q: %v", h, got)
		}
	}
}
