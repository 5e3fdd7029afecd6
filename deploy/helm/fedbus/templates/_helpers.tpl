{{/* Name of the release's objects: <release>-fedbus, or the release name when it contains "fedbus". */}}
{{- define "fedbus.fullname" -}}
{{- if contains "fedbus" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-fedbus" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "fedbus.labels" -}}
app.kubernetes.io/name: fedbus
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component (federator or ingress): call with (list . "federator"). */}}
{{- define "fedbus.selector" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: fedbus
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* The environment both binaries read (contract section 5). */}}
{{- define "fedbus.env" -}}
- name: FED_DOMAIN
  value: {{ required "domain is required" .Values.domain | quote }}
- name: FED_NATS_URL
  value: {{ .Values.natsUrl | quote }}
{{- if .Values.natsCredsSecret }}
- name: FED_NATS_CREDS
  value: /nats/{{ .Values.natsCredsKey }}
{{- end }}
{{- if .Values.dnsServer }}
- name: FED_DNS_SERVER
  value: {{ .Values.dnsServer | quote }}
{{- end }}
- name: FED_STRATEGY
  value: {{ .Values.strategy | quote }}
- name: FED_ALLOW_LIST
  value: {{ join "," .Values.allowList | quote }}
- name: FED_COMPONENTS
  value: {{ join "," .Values.components | quote }}
- name: FED_REQUEST_TIMEOUT
  value: {{ .Values.requestTimeout | quote }}
- name: FED_TLS_CERT
  value: /certs/{{ .Values.tls.certKey }}
- name: FED_TLS_KEY
  value: /certs/{{ .Values.tls.keyKey }}
- name: FED_TLS_CA
  value: /certs/{{ .Values.tls.caKey }}
- name: FED_OPS_ADDR
  value: {{ printf ":%d" (int .Values.opsPort) | quote }}
- name: FED_SHUTDOWN_TIMEOUT
  value: {{ .Values.shutdownTimeout | quote }}
- name: FED_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- if .Values.kvBucket }}
- name: FED_KV_BUCKET
  value: {{ .Values.kvBucket | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod spec parts shared by both Deployments: call with (list . "federator"). */}}
{{- define "fedbus.pod" -}}
{{- $ := index . 0 -}}
{{- $component := index . 1 -}}
{{- with $.Values.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
# SIGTERM: /readyz turns 503, requests in flight get FED_SHUTDOWN_TIMEOUT.
terminationGracePeriodSeconds: {{ $.Values.terminationGracePeriodSeconds }}
volumes:
  - name: certs
    secret:
      secretName: {{ required "tls.secretName is required" $.Values.tls.secretName }}
{{- if $.Values.natsCredsSecret }}
  - name: nats
    secret:
      secretName: {{ $.Values.natsCredsSecret }}
{{- end }}
{{- with $.Values.nodeSelector }}
nodeSelector:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with $.Values.tolerations }}
tolerations:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with $.Values.affinity }}
affinity:
{{ toYaml . | indent 2 }}
{{- end }}
{{- end -}}

{{/* The container settings shared by both: call with (list . "federator"). */}}
{{- define "fedbus.container" -}}
{{- $ := index . 0 -}}
image: {{ printf "%s:%s" $.Values.image.repository $.Values.image.tag | quote }}
imagePullPolicy: {{ $.Values.image.pullPolicy }}
command: [{{ printf "/%s" (index . 1) | quote }}]
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
volumeMounts:
  - name: certs
    mountPath: /certs
    readOnly: true
{{- if $.Values.natsCredsSecret }}
  - name: nats
    mountPath: /nats
    readOnly: true
{{- end }}
livenessProbe:
  httpGet:
    path: /livez
    port: ops
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: ops
  periodSeconds: 5
  failureThreshold: 2
startupProbe:
  httpGet:
    path: /livez
    port: ops
  periodSeconds: 2
  failureThreshold: 30
{{- end -}}
