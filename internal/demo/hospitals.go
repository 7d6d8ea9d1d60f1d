package demo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	httpadapter "github.com/ztgate/ztgate/adapters/http"
	"github.com/ztgate/ztgate/gateway"
	"github.com/ztgate/ztgate/internal/pkitest"
	"github.com/ztgate/ztgate/pki"
)

// The demo's other partner hospitals. Hospital A (HospitalTD) is in the city's catalog; B and C
// are known only by the city's federation entries for them.
const (
	HospitalBTD = "hospital-b.example.de"
	HospitalCTD = "hospital-c.example.sg"
	HospitalBID = "spiffe://hospital-b.example.de/ehr"
	HospitalCID = "spiffe://hospital-c.example.sg/ehr"
)

// hospital is a partner hospital: a gateway of its own, with its own built-in CA and trust
// domain, that serves its trust domain's bundle at a SPIFFE bundle endpoint.
type hospital struct {
	td, country, trustLevel string
	profile                 string
	ca                      *pki.CA
	caDir                   string
	webCA                   string // https_web: the private web CA that signed the endpoint's certificate
	rt                      *gateway.Runtime
	url                     string
	addr                    string // the gateway's UDP address: it enrols and renews its connectors
}

func (h *hospital) gatewayID() string { return "spiffe://" + h.td + "/gateway/gw-1" }

// startHospitals brings up hospitals A, B and C, each serving its bundle: A and C with the
// https_spiffe profile (their gateway's SVID), B with https_web (a certificate from a private web
// CA). The city trusts A and B as "trusted", C as a "partner".
func (c *city) startHospitals(ctx context.Context, bundle string) error {
	c.hospitals = []*hospital{
		{td: HospitalTD, country: "SG", trustLevel: "trusted", profile: pki.ProfileHTTPSSPIFFE, ca: c.caHosp, caDir: filepath.Join(c.dir, "hospital-ca")},
		{td: HospitalBTD, country: "DE", trustLevel: "trusted", profile: pki.ProfileHTTPSWeb},
		{td: HospitalCTD, country: "SG", trustLevel: "partner", profile: pki.ProfileHTTPSSPIFFE},
	}
	for _, h := range c.hospitals {
		if err := os.MkdirAll(filepath.Join(c.dir, h.td), 0o700); err != nil {
			return err
		}
		if h.ca == nil {
			h.caDir = filepath.Join(c.dir, h.td, "ca")
			ca, err := pki.InitCA(h.caDir, spiffeid.RequireTrustDomainFromString(h.td), time.Now())
			if err != nil {
				return err
			}
			h.ca = ca
		}
		ep := &gateway.BundleEndpointConfig{Listen: "127.0.0.1:0", Profile: h.profile}
		if h.profile == pki.ProfileHTTPSWeb {
			w, err := pkitest.NewWebCert(filepath.Join(c.dir, h.td, "web"))
			if err != nil {
				return err
			}
			ep.CertFile, ep.KeyFile, h.webCA = w.CertFile, w.KeyFile, w.CAFile
		}
		cfg := &gateway.Config{
			Listen: "127.0.0.1:0", SPIFFEID: h.gatewayID(), Country: h.country, CADir: h.caDir,
			BundleEndpoint: ep,
			Policy:         gateway.PolicyConfig{Bundle: bundle},
			Audit:          gateway.AuditConfig{Path: filepath.Join(c.dir, h.td, "audit.db")},
		}
		rt, err := gateway.Build(ctx, cfg, c.logger.With("process", "gateway-"+h.td), false)
		if err != nil {
			return fmt.Errorf("hospital %s: %w", h.td, err)
		}
		h.rt = rt
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		h.addr = pc.LocalAddr().String()
		go func() {
			if err := rt.Serve(ctx, pc); err != nil {
				c.logger.Error("hospital gateway stopped", "trust_domain", h.td, "err", err)
			}
		}()
		deadline := time.Now().Add(10 * time.Second)
		for rt.BundleEndpointAddr() == "" {
			if time.Now().After(deadline) {
				return fmt.Errorf("hospital %s: bundle endpoint did not start", h.td)
			}
			time.Sleep(10 * time.Millisecond)
		}
		h.url = "https://" + rt.BundleEndpointAddr() + "/"
	}
	return nil
}

// federation is the city's federation list: every hospital by the URL of its bundle endpoint.
func (c *city) federation() []gateway.Federation {
	var out []gateway.Federation
	for _, h := range c.hospitals {
		f := gateway.Federation{TrustDomain: h.td, EndpointURL: h.url, Profile: h.profile, TrustLevel: h.trustLevel, Country: h.country}
		if h.profile == pki.ProfileHTTPSSPIFFE {
			f.EndpointSPIFFEID = h.gatewayID()
			f.BootstrapBundle = filepath.Join(h.caDir, pki.BundleFile)
		} else {
			f.EndpointCAFile = h.webCA
		}
		out = append(out, f)
	}
	return out
}

// waitFederated waits until the city has fetched every hospital's bundle from its endpoint.
func (c *city) waitFederated(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		fetched := 0
		for _, st := range c.rt.Partners() {
			if !st.LastSuccess.IsZero() {
				fetched++
			}
		}
		if fetched == len(c.hospitals) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the city fetched %d of %d hospital bundles: %+v", fetched, len(c.hospitals), c.rt.Partners())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *city) closeHospitals() error {
	var errs []error
	for _, h := range c.hospitals {
		if h.rt != nil {
			errs = append(errs, h.rt.Close())
		}
	}
	return errors.Join(errs...)
}

// startHospitalConnector runs hospital B's integration as its engineers would: `ztgate connect`
// under hospital B's trust domain, enrolled by hospital B's own gateway with a join token from
// hospital B's CA, consuming the city's health records through the city's gateway, which it
// verifies against the city's bundle fetched from the city's bundle endpoint.
func (c *city) startHospitalConnector(ctx context.Context) error {
	hb := c.hospitals[1]
	tok, err := hb.ca.NewJoinToken(spiffeid.RequireFromString(HospitalBID), 5*time.Minute)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.rt.BundleEndpointAddr() == "" {
		if time.Now().After(deadline) {
			return errors.New("the city's bundle endpoint did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return c.startConnector(ctx, HospitalBConnector, &httpadapter.Config{
		Gateway: c.gwAddr, GatewayID: GatewayID, SPIFFEID: HospitalBID, Issuer: hb.addr, JoinToken: tok,
		Federation: []gateway.Federation{{
			TrustDomain: CityTD, EndpointURL: "https://" + c.rt.BundleEndpointAddr() + "/", Profile: pki.ProfileHTTPSSPIFFE,
			EndpointSPIFFEID: GatewayID, BootstrapBundle: filepath.Join(c.dir, "ca", pki.BundleFile),
		}},
		Consume: []httpadapter.Consume{{Listen: "127.0.0.1:0", Service: "health.records", Purpose: "treatment"}},
	}, false)
}

// HospitalBConnector names hospital B's connector in the demo.
const HospitalBConnector = "hospital-b-connect"
