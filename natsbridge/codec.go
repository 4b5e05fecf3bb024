package natsbridge

import "encoding/json"

// Codec turns payloads into message data and back. Implementations must
// be safe for concurrent use.
type Codec interface {
	// Marshal encodes a payload.
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes data into v, a non-nil pointer.
	Unmarshal(data []byte, v any) error
	// ContentType names the encoding; it travels in the Content-Type
	// header of every message the bridge publishes.
	ContentType() string
}

// JSON is the default Codec: encoding/json.
var JSON Codec = jsonCodec{}

type jsonCodec struct{}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }
func (jsonCodec) ContentType() string                { return "application/json" }
