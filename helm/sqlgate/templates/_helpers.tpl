{{/* The chart's name. */}}
{{- define "sqlgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: also the Service's, so clients call <fullname>:<port>. */}}
{{- define "sqlgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "sqlgate.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "sqlgate.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "sqlgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "sqlgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sqlgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sqlgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sqlgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sqlgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the database URL, and its key. */}}
{{- define "sqlgate.databaseSecret" -}}
{{- default (printf "%s-database" (include "sqlgate.fullname" .)) .Values.database.existingSecret }}
{{- end }}
{{- define "sqlgate.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}database-url{{ end }}
{{- end }}

{{/* Whether authentication is configured in settings.auth. */}}
{{- define "sqlgate.authEnabled" -}}
{{- $auth := default dict .Values.settings.auth -}}
{{- if or $auth.tokens $auth.tokens_file (dig "jwt" "jwks_file" "" $auth) (dig "client_certificates" "roles" dict $auth) -}}
true
{{- end -}}
{{- end }}

{{/* Where the TLS Secret is mounted. */}}
{{- define "sqlgate.tlsDir" -}}/etc/sqlgate/tls{{- end }}

{{/*
sqlgate's settings file: .Values.settings, with what the chart decides
(listen, shutdown, tls, metrics) laid over it.
*/}}
{{- define "sqlgate.settingsToml" -}}
{{- $settings := deepCopy (default dict .Values.settings) -}}
{{- $_ := set $settings "listen" (printf "0.0.0.0:%d" (int .Values.port)) -}}
{{- $shutdown := dict "delay" (printf "%ds" (int .Values.shutdown.delaySeconds)) "drain_timeout" (printf "%ds" (int .Values.shutdown.drainTimeoutSeconds)) -}}
{{- $_ := set $settings "shutdown" $shutdown -}}
{{- if .Values.tls.enabled -}}
{{- $dir := include "sqlgate.tlsDir" . -}}
{{- $tls := dict "cert_file" (printf "%s/tls.crt" $dir) "key_file" (printf "%s/tls.key" $dir) -}}
{{- if .Values.tls.clientAuth -}}
{{- $_ := set $tls "client_ca_file" (printf "%s/ca.crt" $dir) -}}
{{- $_ := set $tls "client_auth" .Values.tls.clientAuth -}}
{{- end -}}
{{- $_ := set $settings "tls" $tls -}}
{{- end -}}
{{- if .Values.metrics.enabled -}}
{{- $_ := set $settings "metrics" (dict "listen" (printf "0.0.0.0:%d" (int .Values.metrics.port))) -}}
{{- end -}}
{{- /* Helm reads every YAML number as a float (16 → 16.0); sqlgate's
counts are integers: whole numbers are written without ".0". */ -}}
{{- regexReplaceAll "(?m)^(\\s*[A-Za-z0-9_]+ = -?[0-9]+)\\.0$" (toToml $settings) "${1}" -}}
{{- end }}
