package shared

import "github.com/microengine/microengine/shared/proto"

func artifactTypeToProto(t ArtifactType) proto.ArtifactType {
	switch t {
	case ArtifactFile:
		return proto.ArtifactType_ARTIFACT_TYPE_FILE
	case ArtifactURL:
		return proto.ArtifactType_ARTIFACT_TYPE_URL
	}
	return proto.ArtifactType_ARTIFACT_TYPE_UNSPECIFIED
}

func artifactTypeFromProto(t proto.ArtifactType) ArtifactType {
	switch t {
	case proto.ArtifactType_ARTIFACT_TYPE_FILE:
		return ArtifactFile
	case proto.ArtifactType_ARTIFACT_TYPE_URL:
		return ArtifactURL
	}
	return ""
}

func verdictToProto(v Verdict) proto.Verdict {
	switch v {
	case VerdictMalicious:
		return proto.Verdict_VERDICT_MALICIOUS
	case VerdictBenign:
		return proto.Verdict_VERDICT_BENIGN
	case VerdictSuspicious:
		return proto.Verdict_VERDICT_SUSPICIOUS
	case VerdictUnknown:
		return proto.Verdict_VERDICT_UNKNOWN
	}
	return proto.Verdict_VERDICT_UNSPECIFIED
}

// verdictFromProto maps anything unrecognised to unknown: a plugin that
// answers garbage has not claimed the artifact is benign.
func verdictFromProto(v proto.Verdict) Verdict {
	switch v {
	case proto.Verdict_VERDICT_MALICIOUS:
		return VerdictMalicious
	case proto.Verdict_VERDICT_BENIGN:
		return VerdictBenign
	case proto.Verdict_VERDICT_SUSPICIOUS:
		return VerdictSuspicious
	}
	return VerdictUnknown
}

func infoToProto(i Info) *proto.InfoResponse {
	out := &proto.InfoResponse{
		Name: i.Name, Version: i.Version, Vendor: i.Vendor,
		VendorVersion: i.VendorVersion, SignaturesVersion: i.SignaturesVersion,
		HasBackend: i.HasBackend,
	}
	for _, t := range i.ArtifactTypes {
		out.ArtifactTypes = append(out.ArtifactTypes, artifactTypeToProto(t))
	}
	for _, f := range i.ConfigSchema {
		out.ConfigSchema = append(out.ConfigSchema, &proto.ConfigField{
			Name: f.Name, Type: string(f.Type), Required: f.Required, Default: f.Default, Description: f.Description,
		})
	}
	for _, s := range i.Samples {
		out.Samples = append(out.Samples, &proto.Sample{
			Name: s.Name, Content: s.Content, Verdict: verdictToProto(s.Verdict), MalwareFamily: s.MalwareFamily,
			Type: artifactTypeToProto(s.Type),
		})
	}
	return out
}

func infoFromProto(p *proto.InfoResponse) Info {
	out := Info{
		Name: p.Name, Version: p.Version, Vendor: p.Vendor,
		VendorVersion: p.VendorVersion, SignaturesVersion: p.SignaturesVersion,
		HasBackend: p.HasBackend, ByReference: p.Descriptors,
	}
	for _, t := range p.ArtifactTypes {
		if at := artifactTypeFromProto(t); at != "" {
			out.ArtifactTypes = append(out.ArtifactTypes, at)
		}
	}
	for _, f := range p.ConfigSchema {
		out.ConfigSchema = append(out.ConfigSchema, ConfigField{
			Name: f.Name, Type: FieldType(f.Type), Required: f.Required, Default: f.Default, Description: f.Description,
		})
	}
	for _, s := range p.Samples {
		out.Samples = append(out.Samples, Sample{
			Name: s.Name, Content: s.Content, Verdict: verdictFromProto(s.Verdict), MalwareFamily: s.MalwareFamily,
			Type: artifactTypeFromProto(s.Type),
		})
	}
	return out
}

func resultToProto(r Result) *proto.ScanResponse {
	return &proto.ScanResponse{
		Verdict: verdictToProto(r.Verdict), Confidence: r.Confidence, MalwareFamily: r.MalwareFamily,
		Metadata: r.Metadata, Reason: r.Reason, Heuristic: r.Heuristic, BytesScanned: r.BytesScanned,
	}
}

func resultFromProto(p *proto.ScanResponse) Result {
	r := Result{
		// Clamped here too: a plugin need not be built on this package's
		// server, and a NaN would break every JSON record downstream.
		Verdict: verdictFromProto(p.Verdict), Confidence: ClampConfidence(p.Confidence), MalwareFamily: p.MalwareFamily,
		Metadata: p.Metadata, Reason: p.Reason, Heuristic: p.Heuristic, BytesScanned: p.BytesScanned,
	}
	if r.Verdict == VerdictUnknown && r.Reason == "" && p.Verdict != proto.Verdict_VERDICT_UNKNOWN {
		r.Reason = "plugin answered no valid verdict"
	}
	return r
}
