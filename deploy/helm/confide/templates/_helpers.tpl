{{- define "confide.name" -}}{{ .Release.Name }}-confide{{- end -}}

{{- define "confide.labels" -}}
app.kubernetes.io/name: confide
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "confide.selector" -}}
app.kubernetes.io/name: confide
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* vLLM pod N's base URL: each pod of the StatefulSet is a replica Confide balances over. */}}
{{- define "confide.vllmUrl" -}}
http://{{ include "confide.name" .root }}-vllm-{{ .index }}.{{ include "confide.name" .root }}-vllm.{{ .root.Release.Namespace }}.svc.cluster.local:{{ .root.Values.vllm.port }}/v1
{{- end -}}

{{- define "confide.models" -}}
{{- if .Values.vllm.enabled -}}
{{- $urls := list -}}
{{- range $i, $_ := until (int .Values.vllm.replicas) -}}
{{- $urls = append $urls (include "confide.vllmUrl" (dict "root" $ "index" $i)) -}}
{{- end -}}
{{- dict .Values.vllm.servedName (dict "base_url" (first $urls) "replicas" (rest $urls) "model" .Values.vllm.servedName "concurrency" .Values.vllm.concurrencyPerReplica) | toJson -}}
{{- else -}}
{{- dict .Values.vllm.servedName (dict "base_url" (first .Values.externalModels) "replicas" (rest .Values.externalModels) "model" .Values.vllm.servedName "concurrency" .Values.vllm.concurrencyPerReplica) | toJson -}}
{{- end -}}
{{- end -}}

{{- define "confide.qdrantUrl" -}}
{{- if .Values.qdrant.enabled -}}
http://{{ .Release.Name }}-qdrant.{{ .Release.Namespace }}.svc.cluster.local:6333
{{- else -}}
{{ required "externalQdrant.url is required when qdrant.enabled is false" .Values.externalQdrant.url }}
{{- end -}}
{{- end -}}

{{/* Environment every Confide container has: the shared state, the store, the models, the persons. */}}
{{- define "confide.env" -}}
- name: CONFIDE_STATE_URL
  valueFrom:
    secretKeyRef:
      {{- if .Values.postgresql.cloudnativepg.enabled }}
      name: {{ include "confide.name" . }}-db-app
      key: uri
      {{- else }}
      name: {{ .Values.secrets.name }}
      key: {{ .Values.postgresql.external.secretKey }}
      {{- end }}
- name: CONFIDE_METRICS__TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.name }}
      key: metrics-token
- name: CONFIDE_MODELS
  value: {{ include "confide.models" . | quote }}
{{- end -}}

{{- define "confide.probes" -}}
livenessProbe:
  exec:
    command: ["confide", "health", "--live"]
  periodSeconds: 20
  timeoutSeconds: 10
  failureThreshold: 3
readinessProbe:
  exec:
    command: ["confide", "health"]
  periodSeconds: 10
  timeoutSeconds: 10
startupProbe:
  exec:
    command: ["confide", "health", "--live"]
  periodSeconds: 5
  timeoutSeconds: 10
  failureThreshold: 60
{{- end -}}

{{- define "confide.securityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
{{- end -}}

{{/* One platform's settings (.name: telegram | matrix | email): a gateway of it has these, and so does every worker
     (which opens no connection: it only learns which platforms there are; its NetworkPolicy allows none). */}}
{{- define "confide.platformEnv" -}}
{{- $g := index .root.Values.gateways .name -}}
{{- $secret := .root.Values.secrets.name -}}
{{- if eq .name "telegram" }}
- name: CONFIDE_TELEGRAM__ENABLED
  value: "true"
- name: CONFIDE_TELEGRAM__TOKEN
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: {{ $g.tokenKey }}}}
{{- else if eq .name "matrix" }}
- name: CONFIDE_MATRIX__ENABLED
  value: "true"
- name: CONFIDE_MATRIX__HOMESERVER
  value: {{ required "gateways.matrix.homeserver" $g.homeserver | quote }}
- name: CONFIDE_MATRIX__USER_ID
  value: {{ required "gateways.matrix.userId" $g.userId | quote }}
- name: CONFIDE_MATRIX__PASSWORD
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: {{ $g.passwordKey }}}}
{{- else if eq .name "email" }}
- name: CONFIDE_EMAIL__SMTP_ENABLED
  value: "true"
- name: CONFIDE_EMAIL__SMTP_LISTEN
  value: "0.0.0.0"
- name: CONFIDE_EMAIL__SMTP_PORT
  value: {{ $g.smtpPort | quote }}
- name: CONFIDE_EMAIL__ADDRESSES
  value: {{ list (required "gateways.email.address" $g.address) | toJson | quote }}
- name: CONFIDE_EMAIL__FROM_ADDRESS
  value: {{ $g.address | quote }}
- name: CONFIDE_EMAIL__RELAY_HOST
  value: {{ required "gateways.email.relayHost" $g.relayHost | quote }}
{{- if $g.imapHost }}
- name: CONFIDE_EMAIL__IMAP_ENABLED
  value: "true"
- name: CONFIDE_EMAIL__IMAP_HOST
  value: {{ $g.imapHost | quote }}
- name: CONFIDE_EMAIL__IMAP_USER
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: {{ $g.imapUserKey }}}}
- name: CONFIDE_EMAIL__IMAP_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ $secret }}, key: {{ $g.imapPasswordKey }}}}
{{- end }}
{{- end }}
{{- end -}}

{{- define "confide.enabledGateways" -}}
{{- $names := list -}}
{{- range $name := list "telegram" "matrix" "email" -}}
{{- if (index $.Values.gateways $name).enabled -}}{{- $names = append $names $name -}}{{- end -}}
{{- end -}}
{{- $names | toJson -}}
{{- end -}}
