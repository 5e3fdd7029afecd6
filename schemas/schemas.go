// Package schemas holds the fedbus contract (CONTRACT.md) as machine-readable
// files and compiles them for validation:
//
//   - error.schema.json: JSON Schema (draft 2020-12) of the error body
//     {"code", "label", "message", "inner"}.
//   - asyncapi.json: AsyncAPI 3.0.0 description of the NATS side: the
//     channels fed.out.{component}.{rpc}.{targetDomain} and
//     fed.in.{component}.{rpc}.{originDomain}, the notification channels
//     fed.notify.{component}.{rpc}.{targetDomain},
//     fed.inbox.{component}.{rpc}.{originDomain} and the dead letters
//     fed.dead.{component}.{rpc}.{targetDomain}, their operations, messages
//     and, under components.schemas, the JSON Schemas of the NATS headers and
//     of the structured-mode CloudEvents (RequestHeaders,
//     InboundRequestHeaders, ResponseHeaders, ErrorHeaders,
//     StructuredHeaders, StructuredEvent, StructuredRequest,
//     StructuredResponse, StructuredError, ErrorBody, NotificationHeaders,
//     InboundNotificationHeaders, DeadLetterHeaders and the token schemas
//     ComponentToken, RPCToken, DomainToken and NotificationId), and the
//     responses whose body is an object of the JetStream object store
//     (contract section 8: ObjectResponseHeaders, StructuredObjectHeaders,
//     StructuredObjectResponse, and the Fedbus-Object-* values ObjectBucket,
//     ObjectName and ObjectSize).
//
// Both files are embedded. They are registered with one compiler under
// BaseURL, so that the AsyncAPI document's reference to error.schema.json
// resolves without any file or network access. Content assertions are on:
// the data_base64 of a structured error event is decoded and validated
// against the error schema. The compiled schemas are cached and safe for
// concurrent use.
//
// Headers are validated as NATS keeps them: names are case-sensitive (the
// ce- headers are lower-case) and only the first value of each is checked.
package schemas

import (
	"bytes"
	_ "embed"
	"fmt"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// BaseURL is the URL under which the embedded documents are registered:
// error.schema.json (its $id) and asyncapi.json are resolved relative to it.
const BaseURL = "https://github.com/fedbus/fedbus/schemas/"

// URLs of the embedded documents.
const (
	ErrorSchemaURL = BaseURL + "error.schema.json"
	AsyncAPIURL    = BaseURL + "asyncapi.json"
)

var (
	//go:embed error.schema.json
	errorSchemaJSON []byte
	//go:embed asyncapi.json
	asyncAPIJSON []byte
)

// ErrorSchemaJSON returns a copy of the embedded error.schema.json.
func ErrorSchemaJSON() []byte { return bytes.Clone(errorSchemaJSON) }

// AsyncAPIJSON returns a copy of the embedded asyncapi.json.
func AsyncAPIJSON() []byte { return bytes.Clone(asyncAPIJSON) }

// registry compiles schemas from the embedded documents on first use and
// caches them; jsonschema.Compiler is not safe for concurrent use, so every
// compilation holds mu.
type registry struct {
	mu       sync.Mutex
	compiler *jsonschema.Compiler
	names    map[string]bool // keys of components.schemas
	initErr  error
	compiled map[string]*jsonschema.Schema // by location
}

var reg registry

// init loads the documents into the compiler; reg.mu must be held.
func (r *registry) init() error {
	if r.compiler != nil || r.initErr != nil {
		return r.initErr
	}
	r.initErr = func() error {
		errDoc, err := jsonschema.UnmarshalJSON(bytes.NewReader(errorSchemaJSON))
		if err != nil {
			return fmt.Errorf("schemas: error.schema.json: %w", err)
		}
		apiDoc, err := jsonschema.UnmarshalJSON(bytes.NewReader(asyncAPIJSON))
		if err != nil {
			return fmt.Errorf("schemas: asyncapi.json: %w", err)
		}
		names, err := schemaNames(apiDoc)
		if err != nil {
			return err
		}
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft2020)
		// Nothing may be loaded from outside the embedded documents.
		c.UseLoader(noLoader{})
		// Decode data_base64 and validate it against its contentSchema.
		c.AssertContent()
		if err := c.AddResource(ErrorSchemaURL, errDoc); err != nil {
			return fmt.Errorf("schemas: add error.schema.json: %w", err)
		}
		if err := c.AddResource(AsyncAPIURL, apiDoc); err != nil {
			return fmt.Errorf("schemas: add asyncapi.json: %w", err)
		}
		r.compiler, r.names = c, names
		r.compiled = make(map[string]*jsonschema.Schema)
		return nil
	}()
	return r.initErr
}

// schemaNames returns the keys of components.schemas of the AsyncAPI document.
func schemaNames(doc any) (map[string]bool, error) {
	root, _ := doc.(map[string]any)
	comps, _ := root["components"].(map[string]any)
	schemas, ok := comps["schemas"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("schemas: asyncapi.json has no components.schemas")
	}
	names := make(map[string]bool, len(schemas))
	for k := range schemas {
		names[k] = true
	}
	return names, nil
}

// compile returns the cached schema at loc, compiling it on first use.
func (r *registry) compile(loc string) (*jsonschema.Schema, error) {
	if s, ok := r.compiled[loc]; ok {
		return s, nil
	}
	s, err := r.compiler.Compile(loc)
	if err != nil {
		return nil, fmt.Errorf("schemas: compile %s: %w", loc, err)
	}
	r.compiled[loc] = s
	return s, nil
}

// noLoader refuses every URL that is not an embedded document.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schemas: %s is not an embedded document", url)
}

// ErrorSchema returns the compiled error body schema (error.schema.json).
func ErrorSchema() (*jsonschema.Schema, error) {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if err := reg.init(); err != nil {
		return nil, err
	}
	return reg.compile(ErrorSchemaURL)
}

// AsyncAPISchema returns the compiled schema #/components/schemas/<name> of
// the AsyncAPI document, e.g. "RequestHeaders" or "ErrorBody". It fails when
// the document has no schema of that name.
func AsyncAPISchema(name string) (*jsonschema.Schema, error) {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if err := reg.init(); err != nil {
		return nil, err
	}
	if !reg.names[name] {
		return nil, fmt.Errorf("schemas: asyncapi.json has no components.schemas.%s", name)
	}
	return reg.compile(AsyncAPIURL + "#/components/schemas/" + escapePointer(name))
}

// escapePointer escapes a JSON pointer token (RFC 6901).
func escapePointer(tok string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(tok)
}

// HeadersObject turns NATS headers into the JSON object that the headers
// schemas describe: each key with its first value. Keys are kept as they
// are (NATS header names are case-sensitive); keys without values are left
// out.
func HeadersObject(h map[string][]string) map[string]any {
	obj := make(map[string]any, len(h))
	for k, v := range h {
		if len(v) > 0 {
			obj[k] = v[0]
		}
	}
	return obj
}

// ValidateHeaders validates NATS headers (a nats.Header, first value of each
// key) against #/components/schemas/<name> of the AsyncAPI document, e.g.
// "RequestHeaders". A violation is returned as a *jsonschema.ValidationError.
func ValidateHeaders(name string, h map[string][]string) error {
	s, err := AsyncAPISchema(name)
	if err != nil {
		return err
	}
	return s.Validate(HeadersObject(h))
}
