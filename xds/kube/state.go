package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"

	"github.com/open-autoglm/autoglm/xds/rollout"
)

func metaName(namespace, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: namespace, Name: name}
}

// RolloutState keeps rollouts' saved state (rollout.Saved, JSON, one key
// per model) in the ConfigMap Namespace/Name, where every autoglm-xds
// replica reads it: the leader writes it, every replica serves the weights
// it holds, and a new leader resumes from it.
type RolloutState struct {
	Client          kubernetes.Interface
	Namespace, Name string
}

// Save writes model's state, creating the ConfigMap if need be.
func (r RolloutState) Save(ctx context.Context, model string, sv rollout.Saved) error {
	data, err := json.Marshal(sv)
	if err != nil {
		return err
	}
	cms := r.Client.CoreV1().ConfigMaps(r.Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := cms.Get(ctx, r.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			cm = &corev1.ConfigMap{ObjectMeta: metaName(r.Namespace, r.Name), Data: map[string]string{model: string(data)}}
			_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return apierrors.NewConflict(corev1.Resource("configmaps"), r.Name, err)
			}
			return err
		}
		if err != nil {
			return err
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		if cm.Data[model] == string(data) {
			return nil
		}
		cm.Data[model] = string(data)
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
}

// Load reads model's saved state; ok is false when there is none.
func (r RolloutState) Load(ctx context.Context, model string) (sv rollout.Saved, ok bool, err error) {
	cm, err := r.Client.CoreV1().ConfigMaps(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return sv, false, nil
	}
	if err != nil {
		return sv, false, err
	}
	return decodeSaved(cm, model)
}

func decodeSaved(cm *corev1.ConfigMap, model string) (sv rollout.Saved, ok bool, err error) {
	text, ok := cm.Data[model]
	if !ok {
		return sv, false, nil
	}
	if err := json.Unmarshal([]byte(text), &sv); err != nil {
		return sv, false, fmt.Errorf("configmap %s/%s: data.%s: %w", cm.Namespace, cm.Name, model, err)
	}
	return sv, true, nil
}

// Follow calls fn with model's saved state now and after every change of
// the ConfigMap, until ctx ends.
func (r RolloutState) Follow(ctx context.Context, model string, fn func(rollout.Saved)) error {
	f := informers.NewSharedInformerFactoryWithOptions(r.Client, 10*time.Minute, informers.WithNamespace(r.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", r.Name).String()
		}))
	changed := make(chan struct{}, 1)
	notify := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	inf := f.Core().V1().ConfigMaps()
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: notify, UpdateFunc: func(_, n any) { notify(n) }}); err != nil {
		return err
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	last := ""
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
		cm, err := inf.Lister().ConfigMaps(r.Namespace).Get(r.Name)
		if err != nil {
			continue
		}
		if sv, ok, err := decodeSaved(cm, model); err == nil && ok && cm.Data[model] != last {
			last = cm.Data[model]
			fn(sv)
		}
	}
}
