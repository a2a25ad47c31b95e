{{/* Labels every object carries. */}}
{{- define "autoglm.labels" -}}
app.kubernetes.io/part-of: autoglm
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end }}

{{/* The Redis URL of the cache tier. */}}
{{- define "autoglm.redisURL" -}}
{{- if .Values.cache.redis.deploy -}}
redis://autoglm-redis.{{ .Release.Namespace }}.svc:6379/0
{{- else -}}
{{ required "cache.redis.url is required when cache.redis.deploy is false" .Values.cache.redis.url }}
{{- end -}}
{{- end }}
