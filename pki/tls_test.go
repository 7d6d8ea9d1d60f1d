package pki

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

type handshakeResult struct {
	state tls.ConnectionState
	err   error
}

// handshake runs a TLS handshake over net.Pipe and returns both sides' results.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) (server, client handshakeResult) {
	t.Helper()
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srvDone := make(chan handshakeResult, 1)
	go func() {
		s := tls.Server(sc, serverCfg)
		err := s.HandshakeContext(ctx)
		if err != nil {
			sc.Close() // unblock the client
		}
		srvDone <- handshakeResult{s.ConnectionState(), err}
	}()
	c := tls.Client(cc, clientCfg)
	err := c.HandshakeContext(ctx)
	if err != nil {
		cc.Close()
	} else {
		// TLS 1.3 servers verify the client certificate after the client
		// considers the handshake done; a read surfaces the server's alert.
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		var b [1]byte
		if _, rerr := c.Read(b[:]); rerr != nil && !errors.Is(rerr, context.DeadlineExceeded) {
			var ne net.Error
			if !errors.As(rerr, &ne) || !ne.Timeout() {
				err = rerr
			}
		}
	}
	client = handshakeResult{c.ConnectionState(), err}
	server = <-srvDone
	return server, client
}

func TestTLSHandshake(t *testing.T) {
	city, _ := newTestCA(t, cityTD, time.Now)
	hospital, _ := newTestCA(t, hospitalTD, time.Now)
	rogueCity, _ := newTestCA(t, cityTD, time.Now) // same trust domain name, different CA

	issue := func(ca *CA, id spiffeid.ID) *Source {
		s, err := ca.Issue(id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return NewSource(s, nil, nil, nil)
	}
	gateway := issue(city, gatewayID)
	cityOnly := NewTrustBundles()
	cityOnly.Set(cityTD, city.Roots())
	federated := NewTrustBundles()
	federated.Set(cityTD, city.Roots())
	federated.Set(hospitalTD, hospital.Roots())

	protos := []string{"ztgate/1"}
	tests := []struct {
		desc          string
		client        *Source
		serverBundles *TrustBundles
		clientBundles *TrustBundles
		authorize     func(spiffeid.ID) error
		wantClientID  spiffeid.ID
		wantCode      string // server-side rejection of the client
		wantClientErr error  // client-side rejection of the server
	}{
		{desc: "city department", client: issue(city, healthID), serverBundles: cityOnly, wantClientID: healthID},
		{desc: "federated partner", client: issue(hospital, ehrID), serverBundles: federated, wantClientID: ehrID},
		{desc: "partner not federated", client: issue(hospital, ehrID), serverBundles: cityOnly, wantCode: CodeUnknownTrustDomain},
		{desc: "foreign CA claiming city identity", client: issue(rogueCity, healthID), serverBundles: cityOnly, wantCode: CodeBadChain},
		{desc: "client refuses unexpected server", client: issue(city, healthID), serverBundles: cityOnly,
			authorize: spiffeid.MatchID(spiffeid.RequireFromString("spiffe://city.example.vn/gateway/gw-2")), wantClientErr: ErrServerNotAuthorized},
		{desc: "client without bundle for the server", client: issue(city, healthID), serverBundles: cityOnly,
			clientBundles: NewTrustBundles(), wantClientErr: &PeerError{}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			clientBundles := tc.clientBundles
			if clientBundles == nil {
				clientBundles = cityOnly
			}
			authorize := tc.authorize
			if authorize == nil {
				authorize = spiffeid.MatchID(gatewayID)
			}
			srvCfg := ServerTLSConfig(gateway, tc.serverBundles, protos, time.Now)
			cliCfg := ClientTLSConfig(tc.client, clientBundles, protos, authorize, time.Now)
			srv, cli := handshake(t, srvCfg, cliCfg)

			switch {
			case tc.wantCode != "":
				var pe *PeerError
				if !errors.As(srv.err, &pe) || pe.Code != tc.wantCode {
					t.Fatalf("server err = %v, want PeerError %s", srv.err, tc.wantCode)
				}
				if cli.err == nil {
					t.Errorf("client saw no failure")
				}
			case tc.wantClientErr != nil:
				var pe *PeerError
				if _, isPeer := tc.wantClientErr.(*PeerError); isPeer {
					if !errors.As(cli.err, &pe) {
						t.Fatalf("client err = %v, want PeerError", cli.err)
					}
				} else if !errors.Is(cli.err, tc.wantClientErr) {
					t.Fatalf("client err = %v, want %v", cli.err, tc.wantClientErr)
				}
				if srv.err == nil {
					t.Errorf("server completed a handshake the client rejected")
				}
			default:
				if srv.err != nil || cli.err != nil {
					t.Fatalf("handshake failed: server %v, client %v", srv.err, cli.err)
				}
				if srv.state.Version != tls.VersionTLS13 || srv.state.NegotiatedProtocol != "ztgate/1" {
					t.Errorf("version %x, ALPN %q", srv.state.Version, srv.state.NegotiatedProtocol)
				}
				gotClient, err := PeerID(srv.state)
				if err != nil || gotClient != tc.wantClientID {
					t.Errorf("server PeerID = %s, %v; want %s", gotClient, err, tc.wantClientID)
				}
				gotServer, err := PeerID(cli.state)
				if err != nil || gotServer != gatewayID {
					t.Errorf("client PeerID = %s, %v; want %s", gotServer, err, gatewayID)
				}
			}
		})
	}
}

func TestTLSConfigShape(t *testing.T) {
	ca, _ := newTestCA(t, cityTD, time.Now)
	s, err := ca.Issue(gatewayID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	src := NewSource(s, nil, nil, nil)
	b := NewTrustBundles()
	srv := ServerTLSConfig(src, b, nil, nil)
	if srv.MinVersion != tls.VersionTLS13 || srv.ClientAuth != tls.RequireAnyClientCert || !srv.SessionTicketsDisabled || srv.ClientCAs != nil {
		t.Errorf("server config: %+v", srv)
	}
	cli := ClientTLSConfig(src, b, nil, nil, nil)
	if cli.MinVersion != tls.VersionTLS13 || cli.RootCAs != nil || cli.ClientSessionCache != nil || cli.VerifyPeerCertificate == nil {
		t.Errorf("client config: %+v", cli)
	}
	// A nil authorizer rejects every server, even a valid one.
	b.Set(cityTD, ca.Roots())
	if err := cli.VerifyPeerCertificate(rawChain(s.Certificates...), nil); !errors.Is(err, ErrServerNotAuthorized) {
		t.Errorf("nil authorizer: err = %v, want ErrServerNotAuthorized", err)
	}
	if _, err := PeerID(tls.ConnectionState{}); err == nil {
		t.Errorf("PeerID of an incomplete handshake succeeded")
	}
}
