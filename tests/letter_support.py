"""Photos as phones and users make them (issue 14), and how a face in a message is read
back: made with Pillow, each with a marker colour along its top edge, so a face drawn
sideways or upside down shows where the marker went."""

from __future__ import annotations

import email
import email.policy
import io
from email.message import EmailMessage
from pathlib import Path

from PIL import Image, ImageDraw

MARKER = (220, 20, 60)  # crimson: the top edge of every test portrait
SKIN = (235, 190, 160)
GPS_IFD = 0x8825
MAKE = 0x010F
ORIENTATION = 0x0112


def upright_portrait(width: int = 300, height: int = 400) -> Image.Image:
    """A portrait as it should be seen: a crimson band along the top (a quarter of it), a
    face-coloured oval below it, white elsewhere."""
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, width, height // 4), fill=MARKER)
    draw.ellipse((width // 4, height // 3, 3 * width // 4, 5 * height // 6), fill=SKIN)
    return img


def phone_jpeg(path: Path, width: int = 300, height: int = 400) -> Path:
    """A portrait saved the way a phone held upright saves it: the pixels as the sensor saw
    them (turned a quarter to the left) with EXIF Orientation 6 ("turn 90° clockwise to
    show"), and the GPS position and camera make that must not travel with the face."""
    stored = upright_portrait(width, height).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    exif[MAKE] = "PhoneMaker"
    exif[GPS_IFD] = {1: "N", 2: (60.0, 10.0, 12.0), 3: "E", 4: (24.0, 56.0, 30.0)}
    path.parent.mkdir(parents=True, exist_ok=True)
    stored.save(path, "JPEG", quality=90, exif=exif.tobytes())
    return path


def landscape_jpeg(path: Path, width: int = 960, height: int = 540) -> Path:
    """A wide photo (16:9): the marker along its whole top edge, a face in its middle."""
    img = Image.new("RGB", (width, height), (200, 220, 240))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, width, height // 4), fill=MARKER)
    draw.ellipse(
        (width // 2 - height // 4, height // 3, width // 2 + height // 4, height), fill=SKIN
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=90)
    return path


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert not msg.defects, msg.defects
    return msg


def faces(msg: EmailMessage) -> dict[str, bytes]:
    """The embedded images of a message by Content-ID (without <>)."""
    out: dict[str, bytes] = {}
    for part in msg.walk():
        if part.get_content_maintype() == "image":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out[str(part["Content-ID"]).strip("<>")] = payload
    return out


def marker_share(img: Image.Image, box: tuple[int, int, int, int]) -> float:
    """The share of the pixels in ``box`` that are the marker colour (JPEG-near)."""
    region = img.convert("RGB").crop(box)
    pixels = list(region.get_flattened_data())
    near = sum(
        1 for r, g, b in pixels if abs(r - MARKER[0]) < 50 and g < 90 and abs(b - MARKER[2]) < 60
    )
    return near / max(1, len(pixels))


def assert_upright(img: Image.Image) -> None:
    """The marker is along the top edge, and neither along the bottom nor a side."""
    w, h = img.size
    top = marker_share(img, (0, 0, w, h // 10))
    bottom = marker_share(img, (0, h - h // 10, w, h))
    left = marker_share(img, (0, h // 3, w // 10, 2 * h // 3))
    right = marker_share(img, (w - w // 10, h // 3, w, 2 * h // 3))
    assert top > 0.8, f"the top edge is not the marker ({top:.2f}): the face is not upright"
    assert max(bottom, left, right) < 0.2, (bottom, left, right)


def jpeg_metadata(data: bytes) -> dict[int, object]:
    """The EXIF of an encoded image (empty when there is none)."""
    with Image.open(io.BytesIO(data)) as img:
        assert "icc_profile" not in img.info
        return dict(img.getexif())


# ----------------------------------------------------------------------------- a messy workspace

RESEARCHERS = [  # a spreadsheet's export: `;`, a BOM, CRLF line ends
    "email;name;first_name;faculty;department;unit;language;tags",
    "maija.korhonen@uni.example;Maija Korhonen;Maija;Medicine;Public Health;Epidemiology;fi;",
    "john.smith@uni.example;John Smith;John;Medicine;Biomedicine;Physiology;en;",
    "anna.lind@uni.example;Anna Lind;Anna;Pharmacy;Pharmacology;Toxicology;sv;",
    "pekka.virta@uni.example;Pekka Virta;Pekka;Pharmacy;Pharmacology;Toxicology;fi;",
    "ella.berg@uni.example;Ella Berg;Ella;Humanities;Languages;Art History;en;",
]

CAMPAIGN = "spring-2027"
CAMPAIGN_YAML = """\
id: spring-2027
title: {fi: Kevään uutiset, sv: Vårens nyheter, en: Spring news}
template: newsletter
sender: liaison
subject:
  fi: "{{ researcher.first_name }}, kevään uutiset kirjastosta"
  sv: "{{ researcher.first_name }}, vårens nyheter från biblioteket"
  en: "{{ researcher.first_name }}, spring news from the library"
audience:
  include: {faculty: [Medicine, Pharmacy]}
introduce:
  - expert: mikko
    audience: {include: {faculty: [Medicine]}}
    note:
      fi: "Mikko on datanhallinnan asiantuntijamme."
      sv: "Mikko är vår expert på datahantering."
      en: "Mikko is our data management specialist."
    liaison_notes:
      aino:
        fi: "Mikko auttoi ryhmääni aineistonhallintasuunnitelman kanssa."
        en: "Mikko helped my group with its data management plan."
  - expert: sofia
    audience: {include: {faculty: [Pharmacy]}}
    note:
      fi: "Sofia neuvoo avoimessa julkaisemisessa."
      sv: "Sofia ger råd om öppen publicering."
      en: "Sofia advises on open access publishing."
body:
  fi: |
    Hei {{ researcher.first_name }},

    keväällä kirjasto tuo tutkijoille uusia palveluja. Esittelen alla asiantuntijan,
    joka auttaa juuri sinun alallasi.

    Terveisin
    {{ liaison.first_name }}
  sv: |
    Hej {{ researcher.first_name }},

    i vår har biblioteket nya tjänster för forskare. Här nedan presenterar jag en expert
    som hjälper just inom ditt område.

    Vänliga hälsningar
    {{ liaison.first_name }}
  en: |
    Dear {{ researcher.first_name }},

    This spring the library has new services for researchers. Below I introduce the expert
    who helps in your own field.

    Best wishes,
    {{ liaison.first_name }}
items:
  - title: {fi: Kevään työpajat, sv: Vårens workshoppar, en: Spring workshops}
    body:
      fi: "Ilmoittaudu kevään työpajoihin: <https://rds.uni.example/workshops>"
      sv: "Anmäl dig till vårens workshoppar: <https://rds.uni.example/workshops>"
      en: "Sign up for the spring workshops: <https://rds.uni.example/workshops>"
"""


def messy_workspace(root: Path, copy_example: object) -> Path:
    """The example's people and settings with: aino's portrait from a phone (sideways,
    EXIF Orientation 6, GPS), lars's a landscape photo, a researcher list exported with
    `;`, a BOM and CRLF, and one campaign that introduces mikko to Medicine and sofia to
    Pharmacy, aino adding her own note on mikko."""
    assert callable(copy_example)
    copy_example(root)
    for old in (root / "campaigns").glob("*.yaml"):
        old.unlink()
    phone_jpeg(root / "people" / "photos" / "aino.jpg")
    landscape_jpeg(root / "people" / "photos" / "lars.jpg")
    (root / "people" / "researchers.csv").write_bytes(
        ("\ufeff" + "\r\n".join(RESEARCHERS) + "\r\n").encode("utf-8")
    )
    (root / "campaigns" / f"{CAMPAIGN}.yaml").write_text(CAMPAIGN_YAML, encoding="utf-8")
    return root
