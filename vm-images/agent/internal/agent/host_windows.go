//go:build windows

package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/windows"
)

// WindowsHost is the machine the agent runs on. Only plain processes and long-standing kernel32
// calls are used (the agent is tested under Wine, which lacks much of the rest).
type WindowsHost struct{}

var (
	kernel32            = windows.NewLazySystemDLL("kernel32.dll")
	procSetComputerName = kernel32.NewProc("SetComputerNameExW")
	procSetSystemTime   = kernel32.NewProc("SetSystemTime")
)

func env(base []string, add []string) []string {
	out := make([]string, 0, len(base)+len(add))
	keys := map[string]bool{}
	for _, kv := range add {
		k, _, _ := strings.Cut(kv, "=")
		keys[strings.ToUpper(k)] = true
	}
	for _, kv := range base {
		if k, _, _ := strings.Cut(kv, "="); !keys[strings.ToUpper(k)] {
			out = append(out, kv)
		}
	}
	return append(out, add...)
}

// Run runs a command; the timeout (or the agent's end) ends its whole tree and returns timedOut.
// The command starts suspended and joins a job object of its own before it runs a single
// instruction, so every process it starts is in the job too, even one whose parent has exited
// already: TerminateJobObject ends them all. taskkill /T (by parent process ids) would miss such
// orphans, and Wine's taskkill has no /T at all; it is only the fallback when the job could not
// be made. What the command leaves running when it ends by itself is left alone, as on Linux.
func (WindowsHost) Run(ctx context.Context, c Command) (int, error) {
	cmd := exec.Command(c.Name, c.Args...)
	cmd.Dir = c.Dir
	cmd.Env = env(os.Environ(), c.Env)
	if c.Stdin != nil {
		cmd.Stdin = bytes.NewReader(c.Stdin)
	}
	if c.Output != nil {
		cmd.Stdout, cmd.Stderr = c.Output, c.Output
		cmd.WaitDelay = 5 * time.Second
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{CreationFlags: windows.CREATE_SUSPENDED}
	if err := cmd.Start(); err != nil {
		return -1, err
	}
	job := joinJob(cmd.Process.Pid)
	if job != 0 {
		defer windows.CloseHandle(job)
	}
	if err := resume(cmd.Process.Pid); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return -1, fmt.Errorf("resuming %s: %w", c.Name, err)
	}
	done := make(chan struct{})
	var stopped atomic.Bool
	kill := func() {
		if job == 0 || windows.TerminateJobObject(job, 1) != nil {
			_ = exec.Command("taskkill", "/T", "/F", "/PID", strconv.Itoa(cmd.Process.Pid)).Run()
		}
		_ = cmd.Process.Kill()
	}
	go func() {
		var timeout <-chan time.Time
		if c.Timeout > 0 {
			timeout = time.After(c.Timeout)
		}
		select {
		case <-done:
		case <-timeout:
			stopped.Store(true)
			kill()
		case <-ctx.Done():
			kill()
		}
	}()
	err := cmd.Wait()
	close(done)
	if stopped.Load() {
		return timedOut, nil
	}
	if cmd.ProcessState == nil {
		return -1, err
	}
	return cmd.ProcessState.ExitCode(), nil
}

// joinJob puts the (suspended) process pid into a new job object: the job, or 0 when that failed.
func joinJob(pid int) windows.Handle {
	job, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		return 0
	}
	p, err := windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, uint32(pid))
	if err == nil {
		err = windows.AssignProcessToJobObject(job, p)
		windows.CloseHandle(p)
	}
	if err != nil {
		windows.CloseHandle(job)
		return 0
	}
	return job
}

// resume starts the threads of a process made with CREATE_SUSPENDED (its one thread; os/exec
// does not keep the thread's handle, so it is found by a snapshot of the system's threads).
func resume(pid int) error {
	snap, err := windows.CreateToolhelp32Snapshot(windows.TH32CS_SNAPTHREAD, 0)
	if err != nil {
		return err
	}
	defer windows.CloseHandle(snap)
	entry := windows.ThreadEntry32{Size: uint32(unsafe.Sizeof(windows.ThreadEntry32{}))}
	resumed := 0
	for err = windows.Thread32First(snap, &entry); err == nil; err = windows.Thread32Next(snap, &entry) {
		if entry.OwnerProcessID != uint32(pid) {
			continue
		}
		t, err := windows.OpenThread(windows.THREAD_SUSPEND_RESUME, false, entry.ThreadID)
		if err != nil {
			return err
		}
		_, err = windows.ResumeThread(t)
		windows.CloseHandle(t)
		if err != nil {
			return err
		}
		resumed++
	}
	if resumed == 0 {
		return errors.New("no thread of the process found")
	}
	return nil
}

func (WindowsHost) Has(program string) bool {
	_, err := exec.LookPath(program)
	return err == nil
}

func (WindowsHost) Hostname() string {
	name, _ := os.Hostname()
	return name
}

// SetHostname renames the computer (effective at the next restart, as Rename-Computer).
func (WindowsHost) SetHostname(name string) error {
	p, err := windows.UTF16PtrFromString(name)
	if err != nil {
		return err
	}
	if err := procSetComputerName.Find(); err != nil {
		return err
	}
	r, _, e := procSetComputerName.Call(uintptr(windows.ComputerNamePhysicalDnsHostname), uintptr(unsafe.Pointer(p)))
	if r == 0 {
		return e
	}
	return nil
}

func (WindowsHost) SetClock(t time.Time) error {
	u := t.UTC()
	st := windows.Systemtime{
		Year: uint16(u.Year()), Month: uint16(u.Month()), DayOfWeek: uint16(u.Weekday()), Day: uint16(u.Day()),
		Hour: uint16(u.Hour()), Minute: uint16(u.Minute()), Second: uint16(u.Second()), Milliseconds: uint16(u.Nanosecond() / 1e6),
	}
	if err := procSetSystemTime.Find(); err != nil {
		return err
	}
	r, _, e := procSetSystemTime.Call(uintptr(unsafe.Pointer(&st)))
	if r == 0 {
		return e
	}
	return nil
}

// Windows files are the profile owner's by where they are (ACLs inherited): nothing to give.
func (WindowsHost) Chown(string, int, int) error     { return nil }
func (WindowsHost) ChownTree(string, int, int) error { return nil }

var errNoMount = errors.New("Windows mounts volumes itself")

func (WindowsHost) Mount(string, string) error { return errNoMount }
func (WindowsHost) Unmount(string) error       { return errNoMount }

func (WindowsHost) Addresses(iface string) ([]net.IP, error) { return interfaceAddresses(iface) }
