// Package e2e holds end-to-end tests that build the project's binaries and
// drive them as a user would, over loopback.
package e2e
