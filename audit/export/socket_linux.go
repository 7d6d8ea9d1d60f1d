package export

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// tcpConn returns the TCP connection under conn (plain, or TLS over TCP), or nil.
func tcpConn(conn net.Conn) syscall.RawConn {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	tcp, ok := conn.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// peerClosed reports whether the receiver has closed the connection or sent something (receivers
// of these protocols send nothing): writing into a connection the peer already closed succeeds
// locally and would lose the batch. It peeks at the socket without consuming; on TLS, bytes
// waiting may be a session ticket, so they are read through TLS (a close_notify ends it).
func peerClosed(conn net.Conn) bool {
	raw := tcpConn(conn)
	if raw == nil {
		return peerClosedByRead(conn)
	}
	waiting, eof := false, false
	err := raw.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == nil && n == 0:
			eof = true
		case err == nil:
			waiting = true
		case !errors.Is(err, syscall.EAGAIN):
			eof = true
		}
	})
	switch {
	case err != nil || eof:
		return true
	case waiting:
		if _, ok := conn.(*tls.Conn); ok {
			return peerClosedByRead(conn)
		}
		return true
	}
	return false
}

// waitDrained waits until the kernel's send queue of conn is empty: the receiving host's TCP stack
// acknowledged every byte written. It fails at once when the connection was reset. Connections
// that are not TCP (or TLS over TCP) return at once.
func waitDrained(ctx context.Context, conn net.Conn, deadline time.Time) error {
	raw := tcpConn(conn)
	if raw == nil {
		return nil
	}
	wait := 50 * time.Microsecond
	for {
		var queued int32
		var ioctlErr syscall.Errno
		var sockErr int
		err := raw.Control(func(fd uintptr) {
			_, _, ioctlErr = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&queued)))
			// A reset leaves unacknowledged bytes counted: the pending error tells it apart.
			sockErr, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ERROR)
		})
		switch {
		case err != nil:
			return err
		case sockErr != 0:
			return syscall.Errno(sockErr)
		case ioctlErr != 0:
			return nil // not supported here: written and flushed is all we can know
		case queued == 0:
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return errors.Join(os.ErrDeadlineExceeded, errors.New("bytes still unacknowledged"))
		}
		time.Sleep(wait)
		wait = min(2*wait, 5*time.Millisecond)
	}
}
