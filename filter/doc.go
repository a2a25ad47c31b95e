// Package filter will hold the proxy-wasm filter (cache and throttling,
// tenant from the verified peer identity), built for GOOS=wasip1 under its
// own issue. It must import nothing outside filter/.
package filter
