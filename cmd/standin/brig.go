package main

import (
	"context"
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/internal/asset"
)

// maxSlow bounds the sleep of the slow RPC.
const maxSlow = time.Minute

// QualifiedID is a user's ID on its backend, as wire-server writes it.
type QualifiedID struct {
	ID     string `json:"id"`
	Domain string `json:"domain"`
}

// Profile is what the stand-in brig answers for a known handle.
type Profile struct {
	ID     QualifiedID `json:"id"`
	Name   string      `json:"name"`
	Handle string      `json:"handle"`
	Accent int         `json:"accent_id"`
}

// Brig is the stand-in component: a few users of its domain and the RPCs
// get-user-by-handle, echo and slow, and cargohold's stream-asset (a
// generated asset of the requested size, streamed through the object
// store). It counts the requests it serves.
type Brig struct {
	users  map[string]Profile
	served atomic.Int64
}

// NewBrig returns a stand-in with the users alice, bob and carol of domain;
// their IDs are derived from domain and handle, so they are the same on
// every run.
func NewBrig(domain string) *Brig {
	b := &Brig{users: make(map[string]Profile)}
	for i, u := range []struct{ handle, name string }{{"alice", "Alice"}, {"bob", "Bob"}, {"carol", "Carol"}} {
		b.users[u.handle] = Profile{ID: QualifiedID{ID: userID(domain, u.handle), Domain: domain}, Name: u.name, Handle: u.handle, Accent: i + 1}
	}
	return b
}

// Served returns how many requests the stand-in answered.
func (b *Brig) Served() int64 { return b.served.Load() }

// userID derives a UUID (version 5 layout) from domain and handle.
func userID(domain, handle string) string {
	sum := sha1.Sum([]byte(domain + "/" + handle))
	u := sum[:16]
	u[6] = u[6]&0x0f | 0x50
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// Handle serves one request (a bus.Handler).
func (b *Brig) Handle(ctx context.Context, req *bus.Request) ([]byte, error) {
	defer b.served.Add(1)
	switch req.RPC {
	case "get-user-by-handle":
		var handle string
		if err := json.Unmarshal(req.Body, &handle); err != nil {
			return nil, contract.Errorf(contract.LabelInvalidRequest, "get-user-by-handle: body is not a JSON string handle")
		}
		u, ok := b.users[handle]
		if !ok {
			return []byte("null"), nil
		}
		body, err := json.Marshal(u)
		if err != nil {
			return nil, fmt.Errorf("get-user-by-handle: %w", err)
		}
		return body, nil
	case "echo":
		return req.Body, nil
	case asset.RPC:
		// cargohold's stream-asset: the raw bytes of the asset
		// (application/octet-stream), streamed into the object store
		// while they are made; the ingress streams them to the remote.
		r, err := asset.ParseRequest(req.Body)
		if err != nil {
			return nil, contract.Errorf(contract.LabelInvalidRequest, "%s: %v", asset.RPC, err)
		}
		return req.ReplyStream(ctx, contract.ContentTypeOctetStream, asset.New(r.Key, r.Size))
	case "slow":
		var ms int64
		if err := json.Unmarshal(req.Body, &ms); err != nil || ms < 0 || time.Duration(ms)*time.Millisecond > maxSlow {
			return nil, contract.Errorf(contract.LabelInvalidRequest, "slow: body is not a number of milliseconds from 0 to %d", maxSlow.Milliseconds())
		}
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, fmt.Errorf("slow: %w", ctx.Err())
		}
		return fmt.Appendf(nil, `{"slept_ms":%d}`, ms), nil
	default:
		return nil, contract.Errorf(contract.LabelInvalidEndpoint, "rpc %q is not served by the stand-in %s", req.RPC, req.Component)
	}
}
