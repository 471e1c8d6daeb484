package agent

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"codebrowse.io/agent/internal/report"
)

// runTest: a test run (manifest "mode": "Run") runs run.script once, as root, in a fresh
// directory, with the run's timeout; its exit status, time and output go to the portal
// (POST /agent/v1/result). A restart after the script began does not run it again (a test that
// reboots the VM or kills the agent ends with what it said so far).
func (a *Agent) runTest(ctx context.Context) bool {
	status := a.session("run.status")
	started := a.session("run.started")
	output := a.session("run.log")
	if !exists(status) {
		if exists(started) {
			appendFile(output, "\n[codebrowse-agent: the agent restarted while the script ran; it was not run again]\n")
			_ = os.WriteFile(status, []byte("255 false 0\n"), 0o600)
		} else {
			timeout := 1800
			if t, ok := a.m.Get("run.timeoutSeconds"); ok {
				if n, err := strconv.Atoi(t); err == nil && n >= 0 && strings.Trim(t, "0123456789") == "" {
					timeout = n
				}
			}
			script, ok := a.m.Raw("run.script")
			if !ok {
				a.log("the manifest has no run.script")
				return false
			}
			scriptFile := a.session(runScriptFile)
			_ = os.WriteFile(scriptFile, []byte(script), 0o600)
			home := a.path("/root")
			if a.user != nil {
				home = a.path(a.user.Home)
			}
			dir := freshPath(home, "test-run")
			_ = os.MkdirAll(dir, 0o755)
			_ = os.WriteFile(output, nil, 0o600)
			_ = os.WriteFile(started, []byte(time.Now().UTC().Format("2006-01-02T15:04:05Z")+"\n"), 0o600)
			a.log("running the test script in %s (timeout %d s)", dir, timeout)
			env := []string{"CODEBROWSE_RUN_DIR=" + dir, "CODEBROWSE_USER=", "CODEBROWSE_HOME="}
			if a.user != nil {
				env = []string{"CODEBROWSE_RUN_DIR=" + dir, "CODEBROWSE_USER=" + a.user.Name, "CODEBROWSE_HOME=" + a.user.Home}
			}
			t0 := time.Now()
			rc := 1
			if out, err := os.OpenFile(output, os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
				name, args := runScriptCommand(scriptFile)
				if s, err := a.Host.Run(ctx, Command{Name: name, Args: args, Dir: dir, Env: env, Output: out, Timeout: time.Duration(timeout) * time.Second}); err == nil {
					rc = s
				} else {
					fmt.Fprintf(out, "%v\n", err)
					rc = 127
				}
				out.Close()
			}
			ms := time.Since(t0).Milliseconds()
			timed := false
			// timeout(1): 124 when it stopped the script, 137 when it had to kill it.
			if rc == timedOut || rc == 137 {
				timed = true
				appendFile(output, fmt.Sprintf("\n[codebrowse-agent: stopped after %d s: spec.run.timeout]\n", timeout))
			}
			_ = os.WriteFile(status, []byte(fmt.Sprintf("%d %t %d\n", rc, timed, ms)), 0o600)
			a.log("the test script exited %d after %d ms", rc, ms)
		}
	}
	if exists(a.session("run.reported")) {
		return true
	}
	var rc int
	var timed bool
	var ms int64
	fmt.Sscanf(firstLine(status), "%d %t %d", &rc, &timed, &ms)
	data, _ := os.ReadFile(output)
	total := int64(len(data))
	send := data
	if total > a.S.RunOutputMax {
		head := data[:min(65536, len(data))]
		keep := a.S.RunOutputMax - 65536 - 64
		if keep < 0 {
			keep = 0
		}
		send = append(append(append([]byte{}, head...), fmt.Sprintf("\n[... %d bytes left out ...]\n", total-a.S.RunOutputMax)...), data[total-keep:]...)
	}
	body := report.Result(rc, timed, ms, firstLine(started), total, send)
	_ = os.WriteFile(a.session("run.json"), body, 0o600)
	if a.client.Post(ctx, "/agent/v1/result", body) == nil {
		_ = touch(a.session("run.reported"))
		a.log("reported the test run (exit %d)", rc)
		return true
	}
	a.log("the test run's result did not reach the portal")
	return false
}

func appendFile(p, text string) {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.WriteString(text)
}
