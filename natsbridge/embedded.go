package natsbridge

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedConfig configures StartEmbedded. Only Dir is required.
type EmbeddedConfig struct {
	// Dir is the JetStream store directory. Required. A server started
	// again on the same directory finds its streams, their messages and
	// its consumers' positions there.
	Dir string

	// Name is the server's name, unique within a cluster. Default
	// "ringbus".
	Name string

	// Listen is the host:port on which the server accepts clients, such
	// as "127.0.0.1:4222" (port -1: any free port). Default "": no port
	// at all, the server is reached only in-process (Conn, Connect).
	Listen string

	// SyncAlways makes the server fsync every write before it
	// acknowledges it: an acknowledged message survives a machine crash
	// (power loss, kernel panic), at a large cost in throughput. Default
	// false: see SyncInterval and "Durability" in the package doc.
	SyncAlways bool

	// SyncInterval is how often the server fsyncs its store when
	// SyncAlways is false. Default 0: the server's own default (two
	// minutes in nats-server v2.15). An acknowledged message has been
	// written to the operating system, so it survives the death of the
	// process (kill -9); a machine crash loses what was not yet fsynced.
	SyncInterval time.Duration

	// Cluster, when its Name is set, makes the server a member of a
	// JetStream cluster: it listens for routes on Cluster.Listen and
	// connects to Cluster.Routes.
	Cluster ClusterConfig

	// Configure, if set, is called last with the server's options, to set
	// what this type does not expose (limits, logging, TLS, accounts).
	Configure func(*server.Options)

	// ReadyTimeout bounds how long StartEmbedded waits for the server to
	// accept connections and for JetStream to be ready. Default 10s.
	ReadyTimeout time.Duration
}

// ClusterConfig makes an embedded server a member of a JetStream
// cluster. Every member needs a unique EmbeddedConfig.Name and its own
// Dir.
type ClusterConfig struct {
	Name   string   // the cluster's name, the same on every member
	Listen string   // host:port for routes, such as "127.0.0.1:6222"
	Routes []string // route URLs of the members, such as "nats://127.0.0.1:6222"; a server skips its own
}

// Embedded is a NATS server with JetStream running inside the process,
// and an in-process client connection to it.
type Embedded struct {
	srv  *server.Server
	conn *nats.Conn

	closeOnce sync.Once
}

// StartEmbedded starts a NATS server with JetStream in this process, on
// cfg.Dir, and connects to it in-process (no socket). It returns when
// JetStream is ready, or an error. The caller owns the result: Close
// stops the server and waits until every goroutine of it has ended.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	opts, err := cfg.options()
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsbridge: starting the embedded server: %w", err)
	}
	e := &Embedded{srv: srv}
	srv.Start()
	wait := cfg.ReadyTimeout
	if wait <= 0 {
		wait = 10 * time.Second
	}
	if !srv.ReadyForConnections(wait) {
		e.Close()
		return nil, fmt.Errorf("natsbridge: the embedded server was not ready within %v", wait)
	}
	conn, err := e.Connect(nats.Name(opts.ServerName))
	if err != nil {
		e.Close()
		return nil, err
	}
	e.conn = conn
	return e, nil
}

func (cfg *EmbeddedConfig) options() (*server.Options, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("%w: EmbeddedConfig.Dir is required", ErrInvalidOption)
	}
	if cfg.SyncInterval < 0 {
		return nil, fmt.Errorf("%w: EmbeddedConfig.SyncInterval %v: want >= 0", ErrInvalidOption, cfg.SyncInterval)
	}
	name := cfg.Name
	if name == "" {
		name = "ringbus"
	}
	opts := &server.Options{
		ServerName:   name,
		JetStream:    true,
		StoreDir:     cfg.Dir,
		SyncAlways:   cfg.SyncAlways,
		SyncInterval: cfg.SyncInterval,
		NoLog:        true,
		NoSigs:       true,
		DontListen:   cfg.Listen == "",
	}
	if cfg.Listen != "" {
		host, port, err := splitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("%w: EmbeddedConfig.Listen: %w", ErrInvalidOption, err)
		}
		opts.Host, opts.Port = host, port
	}
	if c := cfg.Cluster; c.Name != "" {
		host, port, err := splitHostPort(c.Listen)
		if err != nil {
			return nil, fmt.Errorf("%w: ClusterConfig.Listen: %w", ErrInvalidOption, err)
		}
		opts.Cluster.Name, opts.Cluster.Host, opts.Cluster.Port = c.Name, host, port
		if len(c.Routes) > 0 {
			opts.Routes = server.RoutesFromStr(strings.Join(c.Routes, ","))
		}
		if opts.DontListen {
			// A cluster member must listen for clients too: its routes
			// and its clients share the server's network setup.
			opts.DontListen = false
			opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
		}
	}
	if cfg.Configure != nil {
		cfg.Configure(opts)
	}
	return opts, nil
}

func splitHostPort(hp string) (string, int, error) {
	host, ps, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", ps, err)
	}
	return host, port, nil
}

// Conn returns the in-process connection StartEmbedded made. It belongs
// to the Embedded: Close closes it.
func (e *Embedded) Conn() *nats.Conn { return e.conn }

// Connect makes another in-process connection to the server, with opts
// added to nats.InProcessServer. The caller closes it.
func (e *Embedded) Connect(opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.InProcessServer(e.srv)}, opts...)
	nc, err := nats.Connect("", all...)
	if err != nil {
		return nil, fmt.Errorf("natsbridge: connecting to the embedded server: %w", err)
	}
	return nc, nil
}

// Server returns the nats-server. Stop it with Close, not with its own
// Shutdown, so that the connection is closed first and every goroutine
// is waited for.
func (e *Embedded) Server() *server.Server { return e.srv }

// ClientURL returns the URL clients in other processes connect to, or ""
// when the server does not listen (EmbeddedConfig.Listen is empty).
func (e *Embedded) ClientURL() string {
	if e.srv.Addr() == nil {
		return ""
	}
	return e.srv.ClientURL()
}

// Close closes Conn, shuts the server down and waits until it has
// stopped: every goroutine of the server has ended and its store is
// closed. Close it after the bridges and consumers that use it, and after
// the dispatcher they feed (see "Shutdown order" in the package doc).
// Connections made with Connect are the caller's to close, before Close.
// Close is safe to call more than once.
func (e *Embedded) Close() {
	e.closeOnce.Do(func() {
		if e.conn != nil {
			e.conn.Close()
		}
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
	})
}
