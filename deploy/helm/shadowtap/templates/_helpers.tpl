{{/* Names and labels shared by the templates. */}}
{{- define "shadowtap.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "shadowtap.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shadowtap.labels" -}}
{{ include "shadowtap.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "shadowtap.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "shadowtap.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Capabilities of the chosen engine, least first: the eBPF engine loads and attaches the
classifier (BPF, PERFMON, NET_ADMIN); libpcap opens packet sockets (NET_RAW) and sets
promiscuous mode (NET_ADMIN); NET_ADMIN also lets the agent mark its own sockets.
*/}}
{{- define "shadowtap.capabilities" -}}
{{- $caps := list "NET_ADMIN" -}}
{{- if has .Values.engine (list "ebpf" "auto") -}}
{{- $caps = concat (list "BPF" "PERFMON") $caps -}}
{{- end -}}
{{- if has .Values.engine (list "pcap" "auto") -}}
{{- $caps = append $caps "NET_RAW" -}}
{{- end -}}
{{- if not (has .Values.engine (list "ebpf" "pcap" "auto")) -}}
{{- fail (printf "engine must be ebpf, pcap or auto, not %v" .Values.engine) -}}
{{- end -}}
{{- concat $caps .Values.extraCapabilities | uniq | toJson -}}
{{- end -}}

{{/* One TOML value: JSON strings, numbers, booleans and arrays of them are TOML too. */}}
{{- define "shadowtap.tomlValue" -}}
{{- if kindIs "map" . -}}
{{- fail "extraConfig values must be strings, numbers, booleans or lists of them" -}}
{{- else if kindIs "float64" . -}}
{{- if eq (floor .) . -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- else -}}
{{- toJson . -}}
{{- end -}}
{{- end -}}

{{/* `URL` or `URL@PERCENT`, as --target takes it. */}}
{{- define "shadowtap.targets" -}}
{{- $out := list -}}
{{- range .Values.targets -}}
{{- if not .url -}}{{- fail "every entry of targets needs a url" -}}{{- end -}}
{{- if hasKey . "percent" -}}
{{- $out = append $out (printf "%s@%v" .url .percent) -}}
{{- else -}}
{{- $out = append $out .url -}}
{{- end -}}
{{- end -}}
{{- if not $out -}}{{- fail "targets must name at least one target" -}}{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
Refuses values whose memory caps add up to more than the memory limit: capture ring +
4 x maxBuffer (out-of-order bytes and framers' bytes, each up to twice maxBuffer in
memory) + per target (queueLen + maxInFlight) x (maxHead + maxBody) + maxFlows x 1,152
bytes + 30 MiB for the process (deploy/README.md has the measured figures;
scripts/check_deploy.py does the same sum for every rendering it checks).
*/}}
{{- define "shadowtap.memoryCheck" -}}
{{- $c := .Values.caps -}}
{{- $ring := int64 $c.ringBytes -}}
{{- $pcap := int64 $c.pcapBuffer -}}
{{- $capture := ternary $ring (ternary $pcap (max $ring $pcap) (eq .Values.engine "pcap")) (eq .Values.engine "ebpf") -}}
{{- $perCopy := add (int64 $c.maxHead) (int64 $c.maxBody) -}}
{{- $copies := mul (len .Values.targets) (add (int64 $c.queueLen) (int64 $c.maxInFlight)) $perCopy -}}
{{- $total := add $capture (mul 4 (int64 $c.maxBuffer)) $copies (mul (int64 $c.maxFlows) 1152) (mul 30 1048576) -}}
{{- $limit := dig "limits" "memory" "" .Values.resources | toString -}}
{{- if not $limit -}}
{{- fail "resources.limits.memory is needed: the agent's caps are sized against it" -}}
{{- end -}}
{{- $units := dict "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "" 1 -}}
{{- $num := regexFind "^[0-9]+" $limit -}}
{{- $unit := trimPrefix $num $limit -}}
{{- if or (not $num) (not (hasKey $units $unit)) -}}
{{- fail (printf "resources.limits.memory %q: use a plain byte count or Ki, Mi, Gi" $limit) -}}
{{- end -}}
{{- $limitBytes := mul (int64 $num) (get $units $unit) -}}
{{- if gt $total $limitBytes -}}
{{- fail (printf "the memory caps add up to %d MiB, over resources.limits.memory %s: raise the limit or lower caps/targets" (div $total 1048576) $limit) -}}
{{- end -}}
{{- end -}}
