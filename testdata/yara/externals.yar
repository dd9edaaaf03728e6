// Uses the external variables public rule collections expect; the plugin
// defines them (from the artifact's file name where known), so this file
// compiles without -d flags.

rule Script_Extension_Marker
{
  meta:
    malware_family = "MicroEngine.Test.Yara.Script"
  strings:
    $marker = { 4D 49 43 52 4F 45 4E 47 49 4E 45 2D 59 41 52 41 2D 54 45 53 54 2D 53 43 52 49 50 54 }
  condition:
    $marker and extension == ".vbs" and filename endswith ".vbs" and owner == ""
}
