module github.com/ringbus/ringbus/examples/filewatch

go 1.25.0

replace github.com/ringbus/ringbus => ../../

require (
	github.com/fsnotify/fsnotify v1.10.1
	github.com/ringbus/ringbus v0.0.0-00010101000000-000000000000
	go.uber.org/goleak v1.3.0
)

require (
	golang.org/x/sync v0.22.0 // indirect
	golang.org/x/sys v0.13.0 // indirect
)
