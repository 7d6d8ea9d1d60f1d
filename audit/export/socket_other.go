//go:build !linux

package export

import (
	"context"
	"net"
	"time"
)

// peerClosed reports whether the receiver closed the connection (or sent something), with a
// short read.
func peerClosed(conn net.Conn) bool { return peerClosedByRead(conn) }

// waitDrained is a no-op where the socket's send queue cannot be read: a batch counts as
// acknowledged once written and flushed.
func waitDrained(context.Context, net.Conn, time.Time) error { return nil }
