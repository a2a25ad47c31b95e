package kube

import (
	"context"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaseTiming is leader election's timing; the zero value is client-go's
// usual 15 s lease, 10 s renew deadline, 2 s retry.
type LeaseTiming struct {
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// Lead runs fn while this replica (identity) holds the coordination.k8s.io
// Lease namespace/name; fn's context ends when the lease is lost, and the
// replica then campaigns again. The lease is released when ctx ends, so a
// successor need not wait for it to expire. Lead returns when ctx ends.
func Lead(ctx context.Context, client kubernetes.Interface, namespace, name, identity string, t LeaseTiming, fn func(context.Context)) error {
	if t.LeaseDuration == 0 {
		t = LeaseTiming{15 * time.Second, 10 * time.Second, 2 * time.Second}
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metaName(namespace, name),
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, Name: name, ReleaseOnCancel: true,
			LeaseDuration: t.LeaseDuration, RenewDeadline: t.RenewDeadline, RetryPeriod: t.RetryPeriod,
			Callbacks: leaderelection.LeaderCallbacks{OnStartedLeading: fn, OnStoppedLeading: func() {}},
		})
		if err != nil {
			return err
		}
		le.Run(ctx)
	}
	return nil
}
