package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/contract"
)

// DeadLetter is a notification set aside, with why.
type DeadLetter struct {
	Seq       uint64 // in the dead-letter stream
	Subject   string // the notification's (fed.notify.…)
	ID        string // its ce-id
	Label     string
	Status    int
	Error     *contract.Error // nil when the header is missing or unreadable
	Time      time.Time       // set aside
	Published time.Time
	Attempts  int
	Header    nats.Header // the notification's own headers
	Body      []byte
}

// DeadMessage builds the dead-letter message of a notification (its
// subject, headers and body as published; notifySeq its sequence in the
// notification stream): on fed.dead.<component>.<rpc>.<target>, or
// fed.dead._invalid when its subject breaks the token rules; the
// notification's headers and body, and the Fedbus-Dead-* headers with the
// refusal e. Its Nats-Msg-Id is derived from notifySeq, so that setting the
// same notification aside twice (a worker died in between) stores it once.
func DeadMessage(subjects contract.Subjects, subject string, header nats.Header, body []byte, notifySeq uint64, e *contract.Error, attempts int, published, now time.Time) *nats.Msg {
	dead := subjects.DeadInvalid()
	if _, ok := Destination(subjects, subject); ok {
		r, _ := subjects.ParseNotify(subject)
		if s, err := subjects.Dead(r.Component, r.RPC, r.Domain); err == nil {
			dead = s
		}
	}
	h := make(nats.Header, len(header)+8)
	for k, v := range header {
		if strings.HasPrefix(k, "Nats-") || strings.HasPrefix(k, "Fedbus-Dead-") {
			continue
		}
		h[k] = v
	}
	h.Set(contract.HeaderDeadLabel, e.Label)
	h.Set(contract.HeaderDeadStatus, strconv.Itoa(e.Code))
	h.Set(contract.HeaderDeadError, string(e.JSON()))
	h.Set(contract.HeaderDeadSubject, subject)
	h.Set(contract.HeaderDeadTime, now.UTC().Format(time.RFC3339Nano))
	if !published.IsZero() {
		h.Set(contract.HeaderDeadPublished, published.UTC().Format(time.RFC3339Nano))
	}
	h.Set(contract.HeaderDeadAttempts, strconv.Itoa(attempts))
	h.Set(contract.HeaderMsgID, "dead/"+strconv.FormatUint(notifySeq, 10))
	return &nats.Msg{Subject: dead, Header: h, Data: body}
}

// decodeDead reads a dead letter of the dead-letter stream.
func decodeDead(m *jetstream.RawStreamMsg) DeadLetter {
	h := m.Header
	dl := DeadLetter{Seq: m.Sequence, Subject: h.Get(contract.HeaderDeadSubject), ID: h.Get(contract.HeaderID),
		Label: h.Get(contract.HeaderDeadLabel), Body: m.Data, Header: nats.Header{}}
	dl.Status, _ = strconv.Atoi(h.Get(contract.HeaderDeadStatus))
	dl.Attempts, _ = strconv.Atoi(h.Get(contract.HeaderDeadAttempts))
	dl.Time, _ = time.Parse(time.RFC3339Nano, h.Get(contract.HeaderDeadTime))
	dl.Published, _ = time.Parse(time.RFC3339Nano, h.Get(contract.HeaderDeadPublished))
	var e contract.Error
	if err := json.Unmarshal([]byte(h.Get(contract.HeaderDeadError)), &e); err == nil && e.Label != "" {
		dl.Error = &e
	}
	for k, v := range h {
		if !strings.HasPrefix(k, "Fedbus-Dead-") && !strings.HasPrefix(k, "Nats-") {
			dl.Header[k] = v
		}
	}
	return dl
}

// ListDead returns up to limit dead letters (0: all), oldest first; of one
// destination when domain is not empty.
func ListDead(ctx context.Context, dead jetstream.Stream, subjects contract.Subjects, domain string, limit int) ([]DeadLetter, error) {
	filter := subjects.DeadAll()
	if domain != "" {
		f, err := subjects.DeadDomain(domain)
		if err != nil {
			return nil, err
		}
		filter = f
	}
	var out []DeadLetter
	for seq := uint64(1); limit <= 0 || len(out) < limit; {
		m, err := dead.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return out, fmt.Errorf("list dead letters: %w", err)
		}
		out = append(out, decodeDead(m))
		seq = m.Sequence + 1
	}
	return out, nil
}

// ErrNotReplayable is returned by Replay for a dead letter whose subject
// names no destination.
var ErrNotReplayable = errors.New("notify: dead letter cannot be replayed")

// Replay publishes the dead letter seq again as the notification it was
// (same subject, headers, body and ce-id, so that a remote that stored it
// after all still recognises it), at the end of its destination's backlog,
// then removes it from the dead-letter stream. Its Nats-Msg-Id in the
// notification stream is replay/<seq>, not the ce-id: the replay is
// stored even within the duplicate window of the first publish, and two
// replays of one dead letter store it once.
func Replay(ctx context.Context, js jetstream.JetStream, dead jetstream.Stream, subjects contract.Subjects, seq uint64) (DeadLetter, error) {
	m, err := dead.GetMsg(ctx, seq)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("replay dead letter %d: %w", seq, err)
	}
	dl := decodeDead(m)
	if _, ok := Destination(subjects, dl.Subject); !ok {
		return dl, fmt.Errorf("replay dead letter %d (subject %q): %w", seq, dl.Subject, ErrNotReplayable)
	}
	h := make(nats.Header, len(dl.Header)+1)
	for k, v := range dl.Header {
		h[k] = v
	}
	h.Set(contract.HeaderMsgID, "replay/"+strconv.FormatUint(seq, 10))
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: dl.Subject, Header: h, Data: dl.Body}); err != nil {
		return dl, fmt.Errorf("replay dead letter %d: publish: %w", seq, err)
	}
	if err := dead.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return dl, fmt.Errorf("replay dead letter %d: published, but removing it failed: %w", seq, err)
	}
	return dl, nil
}
