package dist

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// LaunchOptions describe the workers Launch starts on this machine.
type LaunchOptions struct {
	Command    []string // the worker's command line (program and arguments)
	NProc      int      // workers on this machine
	NNodes     int      // machines in the job (0: 1)
	NodeRank   int      // this machine's index among them
	MasterAddr string   // rank 0's machine ("" : 127.0.0.1, single-machine jobs only)
	MasterPort int      // 0: a free port (single-machine jobs), else DefaultPort
	Timeout    time.Duration
	// Grace is how long the other workers get to stop after SIGTERM (sent
	// when a worker failed) before SIGKILL; 0: 30 s. After an interrupt the
	// workers get all the time they need to finish the step and save; a
	// second interrupt should end the launcher (its workers die with it).
	Grace          time.Duration
	Stdout, Stderr io.Writer // nil: the launcher's own
}

// WorkerError is the first worker of a job that failed.
type WorkerError struct {
	Rank  int
	Pid   int
	State *os.ProcessState
}

func (e *WorkerError) Error() string {
	how := "exited with status " + strconv.Itoa(e.State.ExitCode())
	if ws, ok := e.State.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		how = "was killed by signal " + ws.Signal().String()
	}
	return fmt.Sprintf("worker rank %d (pid %d) %s; the launcher stopped the others", e.Rank, e.Pid, how)
}

// ExitCode is the failed worker's exit status (128+signal when killed).
func (e *WorkerError) ExitCode() int {
	if ws, ok := e.State.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return e.State.ExitCode()
}

// ErrWorkersInterrupted is returned when the launcher was interrupted and
// every worker stopped on its own (exit status 130).
var ErrWorkersInterrupted = errors.New("interrupted: every worker stopped")

// Launch runs NProc copies of Command with torchrun's environment (RANK,
// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and
// waits for them. When one fails the others get SIGTERM, then SIGKILL after
// Grace, and the error names the first failed rank. When ctx is cancelled
// (Ctrl-C) every worker gets SIGINT, so that they stop together after a step
// and rank 0 saves, however long that takes. Workers
// run in their own process group (so a terminal's Ctrl-C reaches them only
// through the launcher) and die with the launcher.
func Launch(ctx context.Context, o LaunchOptions) error {
	if len(o.Command) == 0 {
		return errors.New("launch: no command")
	}
	if o.NProc < 1 {
		return fmt.Errorf("--nproc-per-node %d: must be at least 1", o.NProc)
	}
	if o.NNodes == 0 {
		o.NNodes = 1
	}
	if o.NNodes < 1 || o.NodeRank < 0 || o.NodeRank >= o.NNodes {
		return fmt.Errorf("--node-rank %d of --nnodes %d: want 0 <= node rank < nodes", o.NodeRank, o.NNodes)
	}
	if o.MasterAddr == "" {
		if o.NNodes > 1 {
			return errors.New("a job on several machines needs --master-addr: the address of node 0, where rank 0 serves the rendezvous")
		}
		o.MasterAddr = "127.0.0.1"
	}
	if o.MasterPort == 0 {
		if o.NNodes > 1 {
			o.MasterPort = DefaultPort
		} else {
			p, err := freePort(o.MasterAddr)
			if err != nil {
				return err
			}
			o.MasterPort = p
		}
	}
	if o.Grace == 0 {
		o.Grace = 30 * time.Second
	}
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	// The workers die with the launcher (Pdeathsig), which Linux ties to
	// the thread that started them: keep that thread for the whole job.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	world := o.NProc * o.NNodes
	type exit struct {
		local int
		state *os.ProcessState
		err   error
	}
	exits := make(chan exit, o.NProc)
	procs := make([]*exec.Cmd, 0, o.NProc)
	exited := make([]bool, o.NProc)
	var mu sync.Mutex
	signalAll := func(sig syscall.Signal) {
		mu.Lock()
		defer mu.Unlock()
		for i, c := range procs {
			if !exited[i] {
				_ = c.Process.Signal(sig) // fails harmlessly if it just exited
			}
		}
	}
	for i := 0; i < o.NProc; i++ {
		c := exec.Command(o.Command[0], o.Command[1:]...)
		c.Env = append(os.Environ(),
			EnvRank+"="+strconv.Itoa(o.NodeRank*o.NProc+i), EnvWorldSize+"="+strconv.Itoa(world),
			EnvLocalRank+"="+strconv.Itoa(i), EnvLocalWorldSize+"="+strconv.Itoa(o.NProc),
			EnvMasterAddr+"="+o.MasterAddr, EnvMasterPort+"="+strconv.Itoa(o.MasterPort))
		if o.Timeout > 0 {
			c.Env = append(c.Env, EnvTimeout+"="+strconv.FormatFloat(o.Timeout.Seconds(), 'f', -1, 64))
		}
		c.Stdout, c.Stderr = o.Stdout, o.Stderr
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		mu.Lock()
		err := c.Start()
		if err == nil {
			procs = append(procs, c)
		}
		mu.Unlock()
		if err != nil {
			signalAll(syscall.SIGKILL)
			return fmt.Errorf("starting worker rank %d: %w", o.NodeRank*o.NProc+i, err)
		}
		go func(i int, c *exec.Cmd) {
			err := c.Wait()
			exits <- exit{i, c.ProcessState, err}
		}(i, c)
	}
	var first *WorkerError
	interrupted, stopped := false, false
	var deadline <-chan time.Time
	done := ctx.Done()
	for left := o.NProc; left > 0; {
		select {
		case e := <-exits:
			left--
			mu.Lock()
			exited[e.local] = true
			mu.Unlock()
			if e.state == nil || e.state.Success() {
				continue
			}
			if interrupted && e.state.ExitCode() == 130 {
				stopped = true
				continue
			}
			if first == nil {
				first = &WorkerError{Rank: o.NodeRank*o.NProc + e.local, Pid: procs[e.local].Process.Pid, State: e.state}
				if !interrupted {
					signalAll(syscall.SIGTERM)
				}
				if deadline == nil {
					deadline = time.After(o.Grace)
				}
			}
		case <-done:
			done = nil
			interrupted = true
			signalAll(syscall.SIGINT)
		case <-deadline:
			signalAll(syscall.SIGKILL)
		}
	}
	if first != nil {
		return first
	}
	if stopped {
		return ErrWorkersInterrupted
	}
	return nil
}

// freePort asks the kernel for a TCP port that is free now on host.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(strings.Trim(host, "[]"), "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
