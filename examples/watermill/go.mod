module github.com/ringbus/ringbus/examples/watermill

go 1.25.0

replace (
	github.com/ringbus/ringbus => ../../
	github.com/ringbus/ringbus/watermillbus => ../../watermillbus
)

require (
	github.com/ThreeDotsLabs/watermill v1.5.1
	github.com/ringbus/ringbus/watermillbus v0.0.0-00010101000000-000000000000
)

require (
	github.com/cenkalti/backoff/v5 v5.0.3 // indirect
	github.com/google/uuid v1.6.0 // indirect
	github.com/lithammer/shortuuid/v3 v3.0.7 // indirect
	github.com/oklog/ulid v1.3.1 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	github.com/ringbus/ringbus v0.0.0-00010101000000-000000000000 // indirect
	github.com/sony/gobreaker v1.0.0 // indirect
	golang.org/x/sync v0.22.0 // indirect
)
