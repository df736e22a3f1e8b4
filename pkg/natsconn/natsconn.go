// Package natsconn connects jetflow's binaries to NATS with the NATS CLI's
// flag and environment conventions.
package natsconn

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
)

// Options are the connection settings.
type Options struct {
	Server   string
	Creds    string
	User     string
	Password string
	Token    string
	NKey     string
	TLSCert  string
	TLSKey   string
	TLSCA    string
	// PingInterval detects a dead server; short, so that a paused node
	// does not hang clients for minutes.
	PingInterval time.Duration
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// Register adds the connection flags to fs, with defaults from the
// environment (NATS_URL, NATS_CREDS, NATS_USER, NATS_PASSWORD, NATS_TOKEN,
// NATS_NKEY, NATS_CERT, NATS_KEY, NATS_CA).
func (o *Options) Register(fs *flag.FlagSet) {
	fs.StringVar(&o.Server, "server", env("NATS_URL", nats.DefaultURL), "NATS server URLs, comma separated (NATS_URL)")
	fs.StringVar(&o.Creds, "creds", env("NATS_CREDS", ""), "user credentials file (NATS_CREDS)")
	fs.StringVar(&o.User, "user", env("NATS_USER", ""), "user name (NATS_USER)")
	fs.StringVar(&o.Password, "password", env("NATS_PASSWORD", ""), "password (NATS_PASSWORD)")
	fs.StringVar(&o.Token, "token", env("NATS_TOKEN", ""), "token (NATS_TOKEN)")
	fs.StringVar(&o.NKey, "nkey", env("NATS_NKEY", ""), "NKey seed file (NATS_NKEY)")
	fs.StringVar(&o.TLSCert, "tlscert", env("NATS_CERT", ""), "TLS client certificate (NATS_CERT)")
	fs.StringVar(&o.TLSKey, "tlskey", env("NATS_KEY", ""), "TLS client key (NATS_KEY)")
	fs.StringVar(&o.TLSCA, "tlsca", env("NATS_CA", ""), "TLS CA certificate (NATS_CA)")
	fs.DurationVar(&o.PingInterval, "ping-interval", 2*time.Second, "NATS ping interval")
}

// Connect dials NATS; the connection reconnects forever.
func (o *Options) Connect(name string) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.PingInterval(o.PingInterval),
		nats.MaxPingsOutstanding(3),
	}
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.Token != "" {
		opts = append(opts, nats.Token(o.Token))
	}
	if o.NKey != "" {
		opt, err := nats.NkeyOptionFromSeed(o.NKey)
		if err != nil {
			return nil, fmt.Errorf("nkey: %w", err)
		}
		opts = append(opts, opt)
	}
	if o.TLSCert != "" || o.TLSKey != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	nc, err := nats.Connect(o.Server, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", o.Server, err)
	}
	return nc, nil
}
