// Detections whose malware family comes from meta, or from the rule's name.
// Strings are written in hex so this file does not match itself.

rule Family_From_Meta
{
  meta:
    description = "marker FAMILY: the family comes from meta malware_family"
    malware_family = "MicroEngine.Test.Yara.Family"
  strings:
    $marker = { 4D 49 43 52 4F 45 4E 47 49 4E 45 2D 59 41 52 41 2D 54 45 53 54 2D 46 41 4D 49 4C 59 }
  condition:
    $marker
}

rule Family_From_Family_Meta
{
  meta:
    description = "marker KIN: the family comes from meta family"
    family = "MicroEngine.Test.Yara.Kin"
  strings:
    $marker = { 4D 49 43 52 4F 45 4E 47 49 4E 45 2D 59 41 52 41 2D 54 45 53 54 2D 4B 49 4E }
  condition:
    $marker
}

rule Family_From_Rule_Name
{
  // No meta at all: a plain detection, malicious, named after the rule.
  strings:
    $marker = { 4D 49 43 52 4F 45 4E 47 49 4E 45 2D 59 41 52 41 2D 54 45 53 54 2D 4E 41 4D 45 4C 45 53 53 }
  condition:
    $marker
}

rule Shared_With_ClamAV
{
  meta:
    description = "the ALPHA marker that testdata/signatures also flags (a sample both backends catch)"
    malware_family = "MicroEngine.Test.Marker.Alpha"
  strings:
    $marker = { 4D 49 43 52 4F 45 4E 47 49 4E 45 2D 54 45 53 54 2D 4D 41 52 4B 45 52 2D 41 4C 50 48 41 }
  condition:
    $marker
}
