// Package portal speaks the portal's agent API (operator/src/portal/agent-api.ts) with the VM's
// bearer token:
//
//	GET  /agent/v1/manifest?wait=30   204 while unclaimed, 200 the manifest (a portal that knows
//	                                  "wait" holds the answer up to 30 s: a long poll)
//	GET  /agent/v1/packages/<i>       a package's bytes
//	POST /agent/v1/report, /done, /result
//
// The portal limits each VM's requests: a 429 carries Retry-After, which is honoured.
package portal

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// LongPoll is how long the agent asks the portal to hold an unclaimed answer.
const LongPoll = 30 * time.Second

// Client is one VM's client of the agent API.
type Client struct {
	Base  string // the portal's base URL, without a trailing "/"
	Token string
	// HTTP does the requests (its own timeouts are not used: each call sets its own).
	HTTP *http.Client
	// Sleep waits (tests make it instant); it returns early when ctx ends.
	Sleep func(ctx context.Context, d time.Duration)
	// Log says what the client does about a failure (a retry, a refusal).
	Log func(format string, args ...any)
}

// New is a client with the agent's transport: connections time out after 10 s, as curl's
// --connect-timeout did.
func New(base, token string, log func(string, ...any)) *Client {
	transport := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 0,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
	}
	return &Client{Base: strings.TrimSuffix(base, "/"), Token: token, HTTP: &http.Client{Transport: transport}, Sleep: SleepCtx, Log: log}
}

// SleepCtx sleeps d or until ctx ends.
func SleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// Response is what came back: Status 0 when nothing did (Err says why).
type Response struct {
	Status     int
	Body       []byte
	Date       string        // the Date header (for the clock step)
	RetryAfter time.Duration // from a 429 or 503's Retry-After; 0 when it has none
	Err        error
}

func (c *Client) request(ctx context.Context, method, url string, body []byte, auth bool, timeout time.Duration) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, reader)
	if err != nil {
		cancel()
		return nil, err
	}
	if auth {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// RetryAfter reads a Retry-After header: seconds, or an HTTP date.
func RetryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if s, err := strconv.Atoi(h); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, timeout time.Duration) Response {
	resp, err := c.request(ctx, method, c.Base+path, body, true, timeout)
	if err != nil {
		return Response{Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	r := Response{Status: resp.StatusCode, Body: data, Date: resp.Header.Get("Date"), RetryAfter: RetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	if err != nil && resp.StatusCode == http.StatusOK {
		r.Status, r.Err = 0, err
	}
	return r
}

// Manifest asks for the manifest once, long-polling up to wait.
func (c *Client) Manifest(ctx context.Context, wait time.Duration) Response {
	path := "/agent/v1/manifest"
	if wait > 0 {
		path += "?wait=" + strconv.Itoa(int(wait/time.Second))
	}
	return c.do(ctx, http.MethodGet, path, nil, wait+60*time.Second)
}

// Post sends a JSON body, again while the portal is away or busy (no answer, 5xx, 409 and 429,
// the latter after its Retry-After), waiting 1, 2, 4 ... 30 s between tries; nil when it was
// taken, an error after 10 tries or when the portal refused it.
func (c *Client) Post(ctx context.Context, path string, body []byte) error {
	wait := time.Second
	for attempt := 1; ; attempt++ {
		r := c.do(ctx, http.MethodPost, path, body, 60*time.Second)
		pause := wait
		switch {
		case r.Status >= 200 && r.Status < 300:
			return nil
		case r.Status == 0:
			c.Log("POST %s: no answer (%v); again in %s", path, r.Err, seconds(pause))
		case r.Status == 409 || r.Status == 429 || r.Status >= 500:
			if r.RetryAfter > pause {
				pause = r.RetryAfter
			}
			c.Log("POST %s: HTTP %d %s; again in %s", path, r.Status, head(r.Body, 300), seconds(pause))
		default:
			c.Log("POST %s refused: HTTP %d %s", path, r.Status, head(r.Body, 300))
			return fmt.Errorf("POST %s refused: HTTP %d", path, r.Status)
		}
		if attempt >= 10 {
			return fmt.Errorf("POST %s: not taken after %d tries", path, attempt)
		}
		c.Sleep(ctx, pause)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait *= 2
		if wait > 30*time.Second {
			wait = 30 * time.Second
		}
	}
}

func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " s"
}

func head(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return string(b)
}

// Download is a fetched package: its bytes are in the file, hashed on the way.
type Download struct {
	Bytes  int64
	SHA256 string // lower-case hex
	Status int    // the last answer's HTTP status (0: none)
	Err    error  // why it failed; nil when Status is 200 and the body came whole

	retryAfter time.Duration
}

// Download fetches url (with the token when auth: the portal's own download path) into file,
// trying 3 times (1 s, 2 s between, or a 429's Retry-After). A call may take an hour.
func (c *Client) Download(ctx context.Context, url string, auth bool, file string) Download {
	var d Download
	for try := 1; ; try++ {
		d = c.downloadOnce(ctx, url, auth, file)
		if d.Err == nil && d.Status == http.StatusOK {
			return d
		}
		if try >= 3 || ctx.Err() != nil {
			_ = os.Remove(file)
			return d
		}
		pause := time.Duration(try) * time.Second
		if d.Status == http.StatusTooManyRequests && d.retryAfter > pause {
			pause = d.retryAfter
		}
		c.Sleep(ctx, pause)
	}
}

func (c *Client) downloadOnce(ctx context.Context, url string, auth bool, file string) (d Download) {
	resp, err := c.request(ctx, http.MethodGet, url, nil, auth, time.Hour)
	if err != nil {
		d.Err = err
		return d
	}
	defer resp.Body.Close()
	d.Status = resp.StatusCode
	if resp.StatusCode != http.StatusOK {
		d.retryAfter = RetryAfter(resp.Header.Get("Retry-After"), time.Now())
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return d
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		d.Err = err
		return d
	}
	h := sha256.New()
	d.Bytes, err = io.Copy(io.MultiWriter(f, h), resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && resp.ContentLength >= 0 && d.Bytes != resp.ContentLength {
		err = io.ErrUnexpectedEOF
	}
	d.Err = err
	d.SHA256 = hex.EncodeToString(h.Sum(nil))
	return d
}
