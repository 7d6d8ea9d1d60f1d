package testenv

import (
	"errors"
	"os"
	execpkg "os/exec"
	"path/filepath"
	"testing"
)

// rsyslogModuleDirs are where Debian and other distributions keep rsyslog's loadable modules.
var rsyslogModuleDirs = []string{"/usr/lib/x86_64-linux-gnu/rsyslog", "/usr/lib/aarch64-linux-gnu/rsyslog", "/usr/lib/rsyslog", "/usr/lib64/rsyslog"}

// Rsyslogd returns the path of a real rsyslogd for a SIEM receiver in tests; with tls, its GnuTLS
// network stream driver must be installed too (Debian: apt-get install rsyslog rsyslog-gnutls,
// which .ci/run does). Without them t is skipped loudly, or fails when ZTGATE_REQUIRE_SERVICES=1.
func Rsyslogd(t testing.TB, tls bool) string {
	t.Helper()
	bin, err := execpkg.LookPath("rsyslogd")
	if err == nil && tls {
		err = errors.New("its GnuTLS driver lmnsd_gtls.so is not installed (rsyslog-gnutls)")
		for _, d := range rsyslogModuleDirs {
			if _, serr := os.Stat(filepath.Join(d, "lmnsd_gtls.so")); serr == nil {
				err = nil
				break
			}
		}
	}
	if err != nil {
		msg := "rsyslogd is not usable: " + err.Error()
		if os.Getenv(RequireServicesEnv) == "1" {
			t.Fatalf("%s, and %s=1 requires it (apt-get install rsyslog rsyslog-gnutls)", msg, RequireServicesEnv)
		}
		t.Skipf("SKIPPED, NOT TESTED: %s; apt-get install rsyslog rsyslog-gnutls, or set %s=1 to fail instead of skipping", msg, RequireServicesEnv)
	}
	return bin
}
