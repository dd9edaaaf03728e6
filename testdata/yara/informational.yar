// Informational matches: reported in the answer's metadata, never deciding.

rule Hunting_Tag : hunting
{
  meta:
    score = 90
  strings:
    $marker = { 4D 49 43 52 4F 45 4E 47 49 4E 45 2D 59 41 52 41 2D 54 45 53 54 2D 48 55 4E 54 49 4E 47 }
  condition:
    $marker
}

rule Info_Category
{
  meta:
    category = "INFO"
    score = 100
  strings:
    $marker = { 4D 49 43 52 4F 45 4E 47 49 4E 45 2D 59 41 52 41 2D 54 45 53 54 2D 49 4E 46 4F }
  condition:
    $marker
}
