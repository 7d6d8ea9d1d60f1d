package witness

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestClient(t *testing.T) {
	gw := newTestLog(t, testOrigin)
	tw := newTestWitness(t, gw)
	ctx := context.Background()
	cl := &Client{URL: tw.srv.URL + "/", WitnessKey: tw.cosigner.Verifier()}

	ck3 := gw.grow(3, "a")
	cosig, err := cl.AddCheckpoint(ctx, 0, nil, ck3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyCosignature(cl.WitnessKey, ck3, cosig); err != nil {
		t.Fatal(err)
	}

	// A client that lost track learns the witness's size from the 409 and retries with a proof
	// from it.
	ck5 := gw.grow(2, "a")
	_, err = cl.AddCheckpoint(ctx, 0, nil, ck5)
	var conflict *ConflictError
	if !errors.As(err, &conflict) || !errors.Is(err, ErrConflict) || conflict.Size != 3 {
		t.Fatalf("err = %v, want a ConflictError with size 3", err)
	}
	if _, err := cl.AddCheckpoint(ctx, conflict.Size, gw.proof(conflict.Size, 5), ck5); err != nil {
		t.Fatal(err)
	}

	other := newTestLog(t, "city.example.vn/gateway/gw-9")
	impostor := newTestLog(t, testOrigin)
	ck6 := gw.grow(1, "a")
	p := gw.proof(5, 6)
	p[0][0] ^= 1
	for _, tc := range []struct {
		desc string
		old  uint64
		ck   []byte
		p    [][]byte
		want error
	}{
		{"404", 0, other.grow(1, "a"), nil, ErrUnknownLog},
		{"403", 5, impostor.grow(5, "a"), nil, ErrForbidden},
		{"400", 7, ck6, nil, ErrBadRequest},
		{"422", 5, ck6, p, ErrInconsistent},
	} {
		if _, err := cl.AddCheckpoint(ctx, tc.old, tc.p, tc.ck); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.desc, err, tc.want)
		}
	}

	t.Run("an answer not cosigned by the witness's key", func(t *testing.T) {
		fake := newTestCosigner(t, tw.cosigner.Name(), nil)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			line, _ := fake.cosign(testOrigin + "\n6\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
			w.Write(line)
		}))
		defer srv.Close()
		c := &Client{URL: srv.URL, WitnessKey: tw.cosigner.Verifier()}
		if _, err := c.AddCheckpoint(ctx, 5, gw.proof(5, 6), ck6); !errors.Is(err, ErrBadCosignature) {
			t.Fatalf("err = %v, want ErrBadCosignature", err)
		}
	})
	t.Run("a cosignature on another checkpoint", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			line, _ := tw.cosigner.cosign(testOrigin + "\n6\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
			w.Write(line)
		}))
		defer srv.Close()
		c := &Client{URL: srv.URL, WitnessKey: tw.cosigner.Verifier()}
		if _, err := c.AddCheckpoint(ctx, 5, gw.proof(5, 6), ck6); !errors.Is(err, ErrBadCosignature) {
			t.Fatalf("err = %v, want ErrBadCosignature", err)
		}
	})
	t.Run("a 409 without the size content type", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte("4\n"))
		}))
		defer srv.Close()
		c := &Client{URL: srv.URL, WitnessKey: tw.cosigner.Verifier()}
		_, err := c.AddCheckpoint(ctx, 5, gw.proof(5, 6), ck6)
		if err == nil || errors.Is(err, ErrConflict) {
			t.Fatalf("err = %v, want a protocol error", err)
		}
	})
	t.Run("a witness that is down", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close()
		c := &Client{URL: srv.URL, WitnessKey: tw.cosigner.Verifier()}
		if _, err := c.AddCheckpoint(ctx, 5, gw.proof(5, 6), ck6); err == nil {
			t.Fatal("no error from a closed server")
		}
	})
}
