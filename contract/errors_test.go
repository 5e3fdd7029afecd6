package contract_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/fedbus/fedbus/contract"
)

func TestStatusOf(t *testing.T) {
	// The contract's table (section 4), plus the two labels fedbus adds.
	tests := []struct {
		label    string
		status   int
		sentinel *contract.Error
	}{
		{"federation-denied", 400, contract.ErrFederationDenied},
		{"invalid-endpoint", 403, contract.ErrInvalidEndpoint},
		{"invalid-request", 400, contract.ErrInvalidRequest},
		{"unknown-component", 403, contract.ErrUnknownComponent},
		{"no-origin-domain", 403, contract.ErrNoOriginDomain},
		{"domain-parse-error", 403, contract.ErrDomainParseError},
		{"no-client-certificate", 403, contract.ErrNoClientCertificate},
		{"authentication-failure", 403, contract.ErrAuthenticationFailure},
		{"invalid-domain", 422, contract.ErrInvalidDomain},
		{"discovery-failure", 400, contract.ErrDiscoveryFailure},
		{"federation-connection-refused", 521, contract.ErrConnectionRefused},
		{"federation-tls-error", 525, contract.ErrTLSError},
		{"federation-remote-error", 533, contract.ErrRemoteError},
		{"federation-timeout", 504, contract.ErrTimeout},
		{"component-unavailable", 503, contract.ErrComponentUnavailable},
		{"payload-too-large", 413, contract.ErrPayloadTooLarge},
		// Not in the contract's table: fedbus additions.
		{"too-many-requests", 429, contract.ErrTooManyRequests},
		{"server-error", 500, nil},
		{"unknown-federation-error", 500, nil},
		{"no-such-label", 500, nil},
		{"", 500, nil},
	}
	for _, tc := range tests {
		t.Run(tc.label, func(t *testing.T) {
			if got := contract.StatusOf(tc.label); got != tc.status {
				t.Errorf("StatusOf(%q) = %d, want %d", tc.label, got, tc.status)
			}
			if tc.sentinel != nil {
				if tc.sentinel.Label != tc.label || tc.sentinel.Code != tc.status {
					t.Errorf("sentinel = %d %q, want %d %q", tc.sentinel.Code, tc.sentinel.Label, tc.status, tc.label)
				}
			}
			e := contract.Errorf(tc.label, "m %d", 1)
			if e.Code != tc.status || e.Label != tc.label || e.Message != "m 1" {
				t.Errorf("Errorf = %+v", e)
			}
		})
	}
}

func TestErrorJSON(t *testing.T) {
	tests := []struct {
		name string
		err  *contract.Error
		want string
	}{
		{"plain", &contract.Error{Code: 403, Label: "invalid-endpoint", Message: "bad rpc"},
			`{"code":403,"label":"invalid-endpoint","message":"bad rpc"}`},
		{"empty message", &contract.Error{Code: 504, Label: "federation-timeout"},
			`{"code":504,"label":"federation-timeout","message":""}`},
		{"quotes and unicode", &contract.Error{Code: 400, Label: "invalid-request", Message: "\"<é>\"\n"},
			`{"code":400,"label":"invalid-request","message":"\"\u003cé\u003e\"\n"}`},
		{"inner", contract.RemoteError(&contract.Error{Code: 422, Label: "invalid-domain", Message: "no SRV"}),
			`{"code":533,"label":"federation-remote-error","message":"the remote backend answered with an error","inner":{"code":422,"label":"invalid-domain","message":"no SRV"}}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.err.JSON()
			if string(body) != tc.want {
				t.Errorf("JSON() = %s\nwant      %s", body, tc.want)
			}
			var back contract.Error
			if err := json.Unmarshal(body, &back); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			if !reflect.DeepEqual(&back, tc.err) {
				t.Errorf("round trip = %+v, want %+v", back, tc.err)
			}
			if got := contract.ParseError(500, body); !reflect.DeepEqual(got, tc.err) {
				t.Errorf("ParseError(JSON()) = %+v, want %+v", got, tc.err)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	e := contract.Errorf(contract.LabelInvalidDomain, "no SRV for %s", "b.example.com")
	if got, want := e.Error(), "invalid-domain (422): no SRV for b.example.com"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	r := contract.RemoteError(e)
	for _, part := range []string{"federation-remote-error (533)", "invalid-domain (422)", "no SRV for b.example.com"} {
		if !strings.Contains(r.Error(), part) {
			t.Errorf("Error() = %q, missing %q", r.Error(), part)
		}
	}
}

func TestParseError(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 1000)
	long[0] = '<'
	tests := []struct {
		name   string
		status int
		body   []byte
		want   *contract.Error
	}{
		{"contract body", 403, []byte(`{"code":403,"label":"authentication-failure","message":"no SAN matches"}`),
			&contract.Error{Code: 403, Label: "authentication-failure", Message: "no SAN matches"}},
		{"contract body keeps its own code", 500, []byte(`{"code":422,"label":"invalid-domain","message":"m"}`),
			&contract.Error{Code: 422, Label: "invalid-domain", Message: "m"}},
		{"contract body with inner", 533, []byte(`{"code":533,"label":"federation-remote-error","message":"r","inner":{"code":404,"label":"not-found","message":"n"}}`),
			&contract.Error{Code: 533, Label: "federation-remote-error", Message: "r", Inner: &contract.Error{Code: 404, Label: "not-found", Message: "n"}}},
		{"wire-server label not in table", 404, []byte(`{"code":404,"label":"not-found","message":"no user"}`),
			&contract.Error{Code: 404, Label: "not-found", Message: "no user"}},
		{"HTML", 502, []byte("<html><body>Bad Gateway</body></html>"),
			&contract.Error{Code: 502, Label: "unknown-federation-error", Message: "<html><body>Bad Gateway</body></html>"}},
		{"empty", 500, nil,
			&contract.Error{Code: 500, Label: "unknown-federation-error", Message: ""}},
		{"1000 bytes truncated to 200", 503, long,
			&contract.Error{Code: 503, Label: "unknown-federation-error", Message: string(long[:200])}},
		{"JSON without label", 400, []byte(`{"code":400,"message":"m"}`),
			&contract.Error{Code: 400, Label: "unknown-federation-error", Message: `{"code":400,"message":"m"}`}},
		{"JSON without code", 418, []byte(`{"label":"x","message":"m"}`),
			&contract.Error{Code: 418, Label: "unknown-federation-error", Message: `{"label":"x","message":"m"}`}},
		{"JSON code as string", 400, []byte(`{"code":"400","label":"x"}`),
			&contract.Error{Code: 400, Label: "unknown-federation-error", Message: `{"code":"400","label":"x"}`}},
		{"JSON array", 500, []byte(`[1,2]`),
			&contract.Error{Code: 500, Label: "unknown-federation-error", Message: `[1,2]`}},
		{"JSON null", 500, []byte(`null`),
			&contract.Error{Code: 500, Label: "unknown-federation-error", Message: `null`}},
		{"plain text", 429, []byte("slow down"),
			&contract.Error{Code: 429, Label: "unknown-federation-error", Message: "slow down"}},
		{"code below 100", 502, []byte(`{"code":99,"label":"x","message":"m"}`),
			&contract.Error{Code: 502, Label: "unknown-federation-error", Message: `{"code":99,"label":"x","message":"m"}`}},
		{"code above 599", 502, []byte(`{"code":600,"label":"x","message":"m"}`),
			&contract.Error{Code: 502, Label: "unknown-federation-error", Message: `{"code":600,"label":"x","message":"m"}`}},
		{"label not [a-z0-9-]", 404, []byte(`{"code":404,"label":"Not Found","message":"m"}`),
			&contract.Error{Code: 404, Label: "unknown-federation-error", Message: `{"code":404,"label":"Not Found","message":"m"}`}},
		{"invalid inner", 533, []byte(`{"code":533,"label":"federation-remote-error","message":"r","inner":{"code":0,"label":""}}`),
			&contract.Error{Code: 533, Label: "unknown-federation-error", Message: `{"code":533,"label":"federation-remote-error","message":"r","inner":{"code":0,"label":""}}`}},
		{"inner nested 4 deep", 533, nestedErrorBody(4), nestedError(4)},
		{"inner nested 5 deep refused", 533, nestedErrorBody(5),
			&contract.Error{Code: 533, Label: "unknown-federation-error", Message: string(nestedErrorBody(5)[:200])}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := contract.ParseError(tc.status, tc.body)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseError(%d, %.40q) = %+v, want %+v", tc.status, tc.body, got, tc.want)
			}
			if len(got.Message) > 200 && got.Label == contract.LabelUnknownError {
				t.Errorf("message of %d bytes, want at most 200", len(got.Message))
			}
		})
	}
}

// nestedError returns a federation-remote-error with depth inner errors.
func nestedError(depth int) *contract.Error {
	e := &contract.Error{Code: 404, Label: "not-found", Message: "leaf"}
	for range depth {
		e = &contract.Error{Code: 533, Label: contract.LabelRemoteError, Message: "r", Inner: e}
	}
	return e
}

func nestedErrorBody(depth int) []byte { return nestedError(depth).JSON() }

func TestErrorSanitized(t *testing.T) {
	tests := []struct {
		name string
		err  *contract.Error
		same bool
	}{
		{"contract error", contract.Errorf(contract.LabelInvalidDomain, "x"), true},
		{"wire-server label", &contract.Error{Code: 404, Label: "not-found", Message: "m"}, true},
		{"remote error", contract.RemoteError(contract.Errorf(contract.LabelTimeout, "t")), true},
		{"zero code", &contract.Error{Label: "x"}, false},
		{"code 600", &contract.Error{Code: 600, Label: "x"}, false},
		{"empty label", &contract.Error{Code: 400}, false},
		{"label with space", &contract.Error{Code: 400, Label: "bad label"}, false},
		{"label upper case", &contract.Error{Code: 400, Label: "Bad"}, false},
		{"invalid inner", &contract.Error{Code: 533, Label: contract.LabelRemoteError, Inner: &contract.Error{Code: 1, Label: "x"}}, false},
		{"too deep", nestedError(5), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.err.Sanitized()
			if tc.same {
				if got != tc.err {
					t.Errorf("Sanitized() = %+v, want the error itself", got)
				}
				return
			}
			if got.Label != contract.LabelServerError || got.Code != 500 || got.Inner != nil {
				t.Errorf("Sanitized() = %+v, want a server-error", got)
			}
			if again := contract.AsError(tc.err); again.Label != contract.LabelServerError {
				t.Errorf("AsError = %+v, want a server-error", again)
			}
		})
	}
}

func TestRemoteError(t *testing.T) {
	tests := []struct {
		name      string
		inner     *contract.Error
		wantLabel string
		wantCode  int
	}{
		{"remote timeout stays timeout", contract.Errorf(contract.LabelTimeout, "component slow"), contract.LabelTimeout, 504},
		{"remote denied", contract.Errorf(contract.LabelFederationDenied, "not allowed"), contract.LabelRemoteError, 533},
		{"remote unknown body", contract.ParseError(502, []byte("<html>")), contract.LabelRemoteError, 533},
		{"remote remote-error", contract.RemoteError(contract.Errorf(contract.LabelInvalidDomain, "x")), contract.LabelRemoteError, 533},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := contract.RemoteError(tc.inner)
			if e.Label != tc.wantLabel || e.Code != tc.wantCode {
				t.Errorf("RemoteError = %d %s, want %d %s", e.Code, e.Label, tc.wantCode, tc.wantLabel)
			}
			if e.Inner != tc.inner {
				t.Errorf("Inner = %+v, want %+v", e.Inner, tc.inner)
			}
			if e.Message == "" {
				t.Error("empty message")
			}
		})
	}
}

func TestErrorIs(t *testing.T) {
	denied := contract.Errorf(contract.LabelFederationDenied, "b.example.com not allowed")
	remote := contract.RemoteError(contract.Errorf(contract.LabelInvalidDomain, "no SRV"))
	tests := []struct {
		name   string
		err    error
		target error
		want   bool
	}{
		{"same sentinel", contract.ErrTimeout, contract.ErrTimeout, true},
		{"same label, other message", denied, contract.ErrFederationDenied, true},
		{"two errors of one label", denied, contract.Errorf(contract.LabelFederationDenied, "other"), true},
		{"other label", denied, contract.ErrInvalidDomain, false},
		{"wrapped once", fmt.Errorf("x: %w", denied), contract.ErrFederationDenied, true},
		{"wrapped twice", fmt.Errorf("y: %w", fmt.Errorf("x: %w", denied)), contract.ErrFederationDenied, true},
		{"wrapped other label", fmt.Errorf("x: %w", denied), contract.ErrTimeout, false},
		{"joined", errors.Join(io.EOF, denied), contract.ErrFederationDenied, true},
		{"not wrapped with %v", fmt.Errorf("x: %v", denied), contract.ErrFederationDenied, false},
		{"plain error", io.EOF, contract.ErrFederationDenied, false},
		{"bus error is not io.EOF", denied, io.EOF, false},
		{"remote error matches outer label", remote, contract.ErrRemoteError, true},
		// errors.Is looks at the outer label only: the inner error is the
		// remote's body, not part of the chain.
		{"remote error does not match inner label", remote, contract.ErrInvalidDomain, false},
		{"remote timeout", contract.RemoteError(contract.Errorf(contract.LabelTimeout, "t")), contract.ErrTimeout, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := errors.Is(tc.err, tc.target); got != tc.want {
				t.Errorf("errors.Is(%v, %v) = %v, want %v", tc.err, tc.target, got, tc.want)
			}
		})
	}
	t.Run("errors.As through wrapping", func(t *testing.T) {
		var e *contract.Error
		if !errors.As(fmt.Errorf("x: %w", denied), &e) || e != denied {
			t.Errorf("errors.As = %v", e)
		}
	})
}

func TestAsError(t *testing.T) {
	denied := contract.Errorf(contract.LabelFederationDenied, "no")
	tests := []struct {
		name      string
		err       error
		wantLabel string
		wantCode  int
		same      bool
	}{
		{"bus error as is", denied, contract.LabelFederationDenied, 400, true},
		{"wrapped bus error unwrapped", fmt.Errorf("x: %w", denied), contract.LabelFederationDenied, 400, true},
		{"deadline is timeout", context.DeadlineExceeded, contract.LabelTimeout, 504, false},
		{"wrapped deadline is timeout", fmt.Errorf("db: %w", context.DeadlineExceeded), contract.LabelTimeout, 504, false},
		{"plain error is server-error", io.ErrUnexpectedEOF, contract.LabelServerError, 500, false},
		{"canceled is server-error", context.Canceled, contract.LabelServerError, 500, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := contract.AsError(tc.err)
			if e.Label != tc.wantLabel || e.Code != tc.wantCode {
				t.Errorf("AsError(%v) = %d %s, want %d %s", tc.err, e.Code, e.Label, tc.wantCode, tc.wantLabel)
			}
			if tc.same && e != denied {
				t.Errorf("AsError returned a copy %p, want %p", e, denied)
			}
		})
	}
}
