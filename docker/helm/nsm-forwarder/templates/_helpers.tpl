{{/*
Named templates. tests/deploy/helmrender.py renders this chart without a helm binary: keep to the
template subset it documents (if/else/with/define/include and the functions listed there).
*/}}

{{/* The plane's values: .Values.kernel or .Values.vpp. */}}
{{- define "nsm-forwarder.check" -}}
{{- if not (or (eq .Values.forwardingPlane "kernel") (eq .Values.forwardingPlane "vpp")) -}}
{{- fail "forwardingPlane must be kernel or vpp" -}}
{{- end -}}
{{- end }}

{{/* <registry>/<org>/<image>:<tag>, as upstream's chart, without an empty registry or org. */}}
{{- define "nsm-forwarder.image" -}}
{{- with .Values.registry }}{{ . }}/{{ end -}}
{{- with .Values.org }}{{ . }}/{{ end -}}
{{- (index .Values .Values.forwardingPlane).image }}:{{ .Values.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Labels on every object (never in selectors: those stay upstream's). */}}
{{- define "nsm-forwarder.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: networkservicemesh
{{- end }}

{{/* The forwarder's config file (keys of config/forwarder.toml). */}}
{{- define "nsm-forwarder.config" -}}
# nsm-forwarder's own settings, from the chart's values (upstream's are environment variables).
driver = {{ .Values.forwardingPlane | quote }}
workers = {{ .Values.workers }}
log_level = {{ .Values.logLevel | quote }}
wireguard_backend = {{ .Values.wireguardBackend | quote }}
{{- if eq .Values.forwardingPlane "vpp" }}
vpp_api_socket = "/run/vpp/api.sock"
vpp_stats_socket = "/run/vpp/stats.sock"
vpp_connect_timeout = "30s"
{{- end }}
{{- with .Values.extraConfig }}
{{ . }}
{{- end }}
{{- end }}
