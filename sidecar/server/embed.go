package server

import (
	"encoding/base64"
	"encoding/binary"
	"io"
	"math"
	"net/http"

	"github.com/open-autoglm/autoglm/inference"
	"github.com/open-autoglm/autoglm/sidecar/api"
)

// embed answers an embeddings request with the local engine: every input
// is a sequence that only prefills, its final hidden states pooled
// (engine.native.pooling: mean by default, or last) and L2-normalised.
func (s *Server) embed(w http.ResponseWriter, r *http.Request, c *call, raw []byte) {
	req, aerr := api.DecodeEmbeddings(raw)
	if aerr != nil {
		s.reply(w, c, aerr)
		return
	}
	gens := make([]*generation, 0, len(req.Texts)+len(req.Tokens))
	for _, t := range req.Texts {
		gens = append(gens, &generation{model: req.Model, prompt: t, timeoutMS: req.TimeoutMS, pooling: s.pooling, n: 1})
	}
	for _, t := range req.Tokens {
		gens = append(gens, &generation{model: req.Model, tokens: t, timeoutMS: req.TimeoutMS, pooling: s.pooling, n: 1})
	}
	g := gens[0]
	g.more = gens[1:]
	seqs, cancel := s.start(w, r, c, g)
	if seqs == nil {
		return
	}
	defer cancel()
	out := api.EmbeddingList{Object: "list", Model: req.Model, Data: make([]api.Embedding, len(seqs))}
	for i, seq := range seqs {
		if _, err := seq.Wait(); err != io.EOF {
			s.reply(w, c, s.failure(err))
			return
		}
		res := seq.Result()
		out.Usage.PromptTokens += res.PromptTokens
		out.Data[i] = api.Embedding{Object: "embedding", Index: i, Embedding: encodeEmbedding(res.Embedding, req.EncodingFormat)}
	}
	out.Usage.TotalTokens = out.Usage.PromptTokens
	res := total(seqs)
	res.PromptTokens = out.Usage.PromptTokens
	c.generated(s.nextID("emb-"), res)
	s.writeJSON(w, http.StatusOK, out)
	c.answered(http.StatusOK, nil)
}

// encodeEmbedding is a vector as the API writes it: numbers, or with
// base64 the little-endian float32s encoded (as OpenAI's SDKs decode it).
func encodeEmbedding(v []float32, format string) any {
	if format != "base64" {
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out
	}
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return base64.StdEncoding.EncodeToString(b)
}

// poolingOf is the configured pooling's engine value.
func poolingOf(name string) inference.Pooling {
	if name == "last" {
		return inference.PoolLast
	}
	return inference.PoolMean
}
