// Package tests holds ztgate's end-to-end scenarios. They build the real ztgate binary, run the
// gateway and connectors as separate processes on loopback UDP/TCP, and check behaviour from the
// outside: HTTP statuses and bodies, process exit codes, and the audit log on disk.
package tests
