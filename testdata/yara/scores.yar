// Verdicts from meta score (0-100): >= 75 malicious, 40-74 suspicious,
// < 40 informational (engine.hcl's malicious_score / suspicious_score).

rule Score_High
{
  meta:
    score = 80
    malware_family = "MicroEngine.Test.Yara.High"
  strings:
    $marker = { 4D 49 43 52 4F 45 4E 47 49 4E 45 2D 59 41 52 41 2D 54 45 53 54 2D 53 43 4F 52 45 2D 48 49 47 48 }
  condition:
    $marker
}

rule Score_Mid
{
  meta:
    score = "50"
  strings:
    $marker = { 4D 49 43 52 4F 45 4E 47 49 4E 45 2D 59 41 52 41 2D 54 45 53 54 2D 53 43 4F 52 45 2D 4D 49 44 }
  condition:
    $marker
}

rule Score_Low
{
  meta:
    score = 20
  strings:
    $marker = { 4D 49 43 52 4F 45 4E 47 49 4E 45 2D 59 41 52 41 2D 54 45 53 54 2D 53 43 4F 52 45 2D 4C 4F 57 }
  condition:
    $marker
}
