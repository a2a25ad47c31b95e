package testengine_test

import (
	"testing"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/inference/enginetest"
	"github.com/open-autoglm/autoglm/inference/testengine"
)

func TestConformance(t *testing.T) {
	enginetest.Run(t, func(*testing.T) inference.Engine {
		return testengine.New(testengine.Config{Model: "autoglm-test", Slots: 4, ContextLength: 64})
	})
}
