// Package dist is dimtorch's binding to c10d, libtorch's distributed engine:
// a TCPStore rendezvous, Gloo process groups, collectives, an all-gather that
// keeps gradients, and DDP's own gradient Reducer (buckets all-reduced while
// the backward pass runs). It also starts and watches the worker processes of
// a job (Launch), as torchrun does, and reads torchrun's environment
// (FromEnv), so that dimtorch runs under torchrun, Slurm or Kubernetes
// unchanged.
//
// The c10d binding needs Gloo's headers (Debian: libgloo-dev) and adds a
// C++ translation unit to the build; `-tags dimtorch_nodist` builds without
// it (New then returns ErrUnavailable). Binaries linked to an external
// libdimtorch_shim.so (-tags dimtorch_shim) are built without it too.
package dist

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// ErrUnavailable is returned by New in a build without c10d.
var ErrUnavailable = errors.New("this dimtorch was built without distributed support (-tags dimtorch_nodist or dimtorch_shim)")

// DefaultTimeout bounds the rendezvous and every collective: a rank that
// dies or hangs ends the others' wait after this long.
const DefaultTimeout = 60 * time.Second

// DefaultPort is torchrun's default MASTER_PORT.
const DefaultPort = 29500

// Config is where one process stands in a job.
type Config struct {
	Rank, World int    // this process's rank among World processes
	LocalRank   int    // its rank on this machine
	MasterAddr  string // host of rank 0, which serves the rendezvous store
	MasterPort  int
	Timeout     time.Duration // 0: DefaultTimeout
	Iface       string        // network interface for Gloo ("" : the one that reaches MasterAddr)
	BucketBytes int64         // Reducer bucket size; 0: DDP's 25 MiB
}

// Validate checks the ranks, the address and the port.
func (c Config) Validate() error {
	if c.World < 1 {
		return fmt.Errorf("world size %d: must be at least 1", c.World)
	}
	if c.Rank < 0 || c.Rank >= c.World {
		return fmt.Errorf("rank %d is outside a world of %d processes (ranks 0 to %d)", c.Rank, c.World, c.World-1)
	}
	if c.MasterAddr == "" {
		return errors.New("no master address (MASTER_ADDR)")
	}
	if c.MasterPort <= 0 || c.MasterPort > 65535 {
		return fmt.Errorf("master port %d: must be 1 to 65535", c.MasterPort)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("timeout %v: must be positive", c.Timeout)
	}
	return nil
}

// Env names torchrun's variables, which Launch sets for its workers.
const (
	EnvRank           = "RANK"
	EnvWorldSize      = "WORLD_SIZE"
	EnvLocalRank      = "LOCAL_RANK"
	EnvLocalWorldSize = "LOCAL_WORLD_SIZE"
	EnvMasterAddr     = "MASTER_ADDR"
	EnvMasterPort     = "MASTER_PORT"
	EnvTimeout        = "DIMTORCH_DIST_TIMEOUT" // seconds; dimtorch's own
	EnvIface          = "GLOO_SOCKET_IFNAME"    // as PyTorch
)

// FromEnv reads torchrun's environment. ok is false when WORLD_SIZE is not
// set (a plain, single-process run). Missing or malformed variables are
// errors naming the variable.
func FromEnv() (c Config, ok bool, err error) {
	ws, set := os.LookupEnv(EnvWorldSize)
	if !set {
		return c, false, nil
	}
	num := func(name, v string) (int, error) {
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, fmt.Errorf("%s=%q: not an integer", name, v)
		}
		return n, nil
	}
	if c.World, err = num(EnvWorldSize, ws); err != nil {
		return c, true, err
	}
	r, set := os.LookupEnv(EnvRank)
	if !set {
		return c, true, fmt.Errorf("%s is set but %s is not", EnvWorldSize, EnvRank)
	}
	if c.Rank, err = num(EnvRank, r); err != nil {
		return c, true, err
	}
	c.LocalRank = c.Rank
	if v, set := os.LookupEnv(EnvLocalRank); set {
		if c.LocalRank, err = num(EnvLocalRank, v); err != nil {
			return c, true, err
		}
	}
	c.MasterAddr = os.Getenv(EnvMasterAddr)
	if c.MasterAddr == "" {
		if c.World > 1 {
			return c, true, fmt.Errorf("%s is not set", EnvMasterAddr)
		}
		c.MasterAddr = "127.0.0.1"
	}
	c.MasterPort = DefaultPort
	if v := os.Getenv(EnvMasterPort); v != "" {
		if c.MasterPort, err = num(EnvMasterPort, v); err != nil {
			return c, true, err
		}
	}
	if v := os.Getenv(EnvTimeout); v != "" {
		s, err := strconv.ParseFloat(v, 64)
		if err != nil || s <= 0 {
			return c, true, fmt.Errorf("%s=%q: want a positive number of seconds", EnvTimeout, v)
		}
		c.Timeout = time.Duration(s * float64(time.Second))
	}
	c.Iface = os.Getenv(EnvIface)
	return c, true, c.Validate()
}

// bindHost returns the local address Gloo should listen on: loopback for a
// master on this machine's loopback, otherwise the address of the interface
// that routes to the master.
func bindHost(master string, port int) (string, error) {
	if ip := net.ParseIP(master); ip != nil && ip.IsLoopback() || master == "localhost" {
		return "127.0.0.1", nil
	}
	conn, err := net.Dial("udp", net.JoinHostPort(master, strconv.Itoa(port)))
	if err != nil {
		return "", fmt.Errorf("master %s: %w", master, err)
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).IP.String(), nil
}

// Op is a reduction for AllReduce: Sum, Min or Max, c10d::ReduceOp values
// declared in torch/ops.def (ops_gen.go).
type Op int
