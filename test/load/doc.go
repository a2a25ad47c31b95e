// Package load is autoglm-load's engine: a load generator for LLM services
// in the style of Gatling and k6, made native to token streaming. It drives
// a Target (the OpenAI-compatible HTTP API, streamed or not) under an open
// model (arrivals at a rate, constant or Poisson, in ramping stages) or a
// closed one (virtual users with think time, in ramping stages), measures
// latency from each request's intended send time — free of coordinated
// omission — into HDR histograms, and writes a Report.
package load
