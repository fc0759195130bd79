//! Context words, as data, per language, and the one way they are looked for: near the
//! candidate, in the same line and sentence.
//!
//! Each table lists, per language (en, ru, uk, fa, ar, zh, es, pt, de, fr, it, tr, hi, id, ja,
//! ko), lower-case words or phrases. A word of four or more characters also matches with an
//! ending (`kodunuz`, `şifresi`, `телефона`); shorter ones only as whole words. Words of scripts
//! written without spaces (Chinese, Japanese, Korean) need no boundary at all.

use std::ops::Range;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// One language's words of one table.
type Lang = (&'static str, &'static [&'static str]);

/// Words that announce a phone number.
pub(crate) const PHONE: &[Lang] = &[
    (
        "en",
        &[
            "phone",
            "tel",
            "tel.",
            "telephone",
            "mobile",
            "mob",
            "cell",
            "cellphone",
            "call",
            "call me",
            "text me",
            "sms",
            "whatsapp",
            "viber",
            "signal",
            "fax",
            "landline",
            "contact",
            "hotline",
            "office",
            "customer care",
            "customer service",
            "helpline",
            "call center",
            "call centre",
            "toll free",
            "toll-free",
        ],
    ),
    (
        "ru",
        &[
            "телефон",
            "тел",
            "тел.",
            "моб",
            "мобильный",
            "сотовый",
            "звоните",
            "звони",
            "позвони",
            "позвоните",
            "вацап",
            "ватсап",
            "городской",
            "факс",
            "горячая линия",
            "служба поддержки",
        ],
    ),
    (
        "uk",
        &[
            "телефон",
            "тел",
            "моб",
            "мобільний",
            "дзвоніть",
            "дзвони",
            "подзвони",
            "стаціонарний",
            "гаряча лінія",
            "служба підтримки",
        ],
    ),
    ("fa", &["تلفن", "تماس", "موبایل", "همراه", "واتساپ"]),
    (
        "ar",
        &[
            "هاتف",
            "جوال",
            "جوالي",
            "تلفون",
            "تليفون",
            "موبايل",
            "اتصل",
            "اتصال",
            "واتساب",
            "واتس",
            "خدمة العملاء",
            "الخط الساخن",
        ],
    ),
    (
        "zh",
        &[
            "电话",
            "電話",
            "手机",
            "手機",
            "座机",
            "座機",
            "打",
            "联系",
            "聯絡",
            "办公室",
            "辦公室",
            "微信",
            "客服",
        ],
    ),
    (
        "es",
        &[
            "teléfono",
            "telefono",
            "tel",
            "móvil",
            "movil",
            "celular",
            "llámame",
            "llamame",
            "llama",
            "fijo",
            "whatsapp",
            "contacto",
            "atención al cliente",
            "atencion al cliente",
            "servicio al cliente",
        ],
    ),
    (
        "pt",
        &[
            "telefone",
            "tel",
            "celular",
            "cel",
            "zap",
            "whatsapp",
            "ligue",
            "liga",
            "fixo",
            "contato",
            "escritório",
            "whats",
            "central de atendimento",
            "contatos",
        ],
    ),
    (
        "de",
        &[
            "telefon",
            "tel",
            "handy",
            "mobil",
            "festnetz",
            "ruf",
            "rufnummer",
            "anrufen",
            "büro",
            "fax",
            "kundenservice",
            "kundendienst",
        ],
    ),
    (
        "fr",
        &[
            "téléphone",
            "telephone",
            "tél",
            "tel",
            "portable",
            "mobile",
            "appelle",
            "appelez",
            "fixe",
            "bureau",
            "service client",
        ],
    ),
    (
        "it",
        &[
            "telefono",
            "tel",
            "cellulare",
            "cell",
            "fisso",
            "chiama",
            "chiamami",
            "ufficio",
            "servizio clienti",
            "numero verde",
            "contatto",
            "contatti",
            "recapito",
        ],
    ),
    (
        "tr",
        &[
            "telefon",
            "tel",
            "cep",
            "ara",
            "arayın",
            "ofis",
            "sabit",
            "kargocu",
            "kurye",
            "müşteri hizmetleri",
        ],
    ),
    (
        "hi",
        &[
            "फ़ोन",
            "फोन",
            "मोबाइल",
            "कॉल",
            "संपर्क",
            "व्हाट्सएप",
            "ग्राहक सेवा",
        ],
    ),
    (
        "id",
        &[
            "telepon",
            "telpon",
            "telp",
            "hp",
            "ponsel",
            "wa",
            "hubungi",
            "kantor",
            "layanan pelanggan",
        ],
    ),
    (
        "ja",
        &[
            "電話",
            "携帯",
            "連絡",
            "オフィス",
            "実家",
            "留守",
            "フリーダイヤル",
        ],
    ),
    ("ko", &["전화", "휴대폰", "핸드폰", "연락", "사무실", "폰"]),
];

/// The word "number" (and "my number"): a phone announcement unless an id word is near too
/// (`мой номер …` is a phone, `номер заказа …` is not).
pub(crate) const NUMBER: &[Lang] = &[
    ("en", &["number", "my number"]),
    ("ru", &["номер", "номера"]),
    ("uk", &["номер"]),
    ("fa", &["شماره"]),
    ("ar", &["رقم", "رقمي"]),
    ("zh", &["号码", "號碼"]),
    ("es", &["número", "numero"]),
    ("pt", &["número", "numero"]),
    ("de", &["nummer"]),
    ("fr", &["numéro", "numero"]),
    ("it", &["numero"]),
    ("tr", &["numara", "numaram", "numarası", "numarasi"]),
    ("hi", &["नंबर", "नम्बर"]),
    ("id", &["nomor", "nomer"]),
    ("ja", &["番号"]),
    ("ko", &["번호"]),
];

/// Words that make the number after them an identifier (order, tracking, tax, postal …).
pub(crate) const ID: &[Lang] = &[
    (
        "en",
        &[
            "order",
            "invoice",
            "ticket",
            "tracking",
            "reference",
            "isbn",
            "issn",
            "ean",
            "ssn",
            "account",
            "acct",
            "version",
            "build",
            "serial",
            "sku",
            "case",
            "txn",
            "transaction",
            "passport",
            "policy",
            "imei",
            "imsi",
            "iccid",
            "document",
            "contract",
            "patent",
            "awb",
            "pnr",
            "barcode",
            "zip",
            "postcode",
            "room",
            "flight",
            "lottery",
            "timestamp",
            "id",
            "vat",
            "tax",
            "tin",
            "ein",
            "gst",
            "gstin",
            "gtin",
            "upc",
            "jan",
            "registration",
            "reg",
            "lotto",
            "draw",
            "rekening",
            "norek",
            "togel",
            "undian",
            "postal",
            "zip code",
            "kode pos",
            "powerball",
            "jackpot",
            "euromillions",
            "member",
            "membership",
            "policy number",
            "license",
            "licence",
            "fiscal",
            "polis",
            "tiket",
            "anggota",
            "client",
            "customer",
            "rcs",
            "sn",
            "nuban",
        ],
    ),
    (
        "ru",
        &[
            "заказ",
            "счет",
            "счёт",
            "трек",
            "накладная",
            "паспорт",
            "договор",
            "инн",
            "снилс",
            "огрн",
            "индекс",
            "рейс",
            "лотерея",
            "штрихкод",
            "кпп",
            "окпо",
            "тираж",
            "лото",
            "полис",
            "полиса",
            "билет",
            "билета",
            "удостоверение",
            "клиента",
            "клиент",
            "дело",
            "дела",
            "серийный",
            "накладн",
        ],
    ),
    (
        "uk",
        &[
            "замовлення",
            "ттн",
            "рахунок",
            "єдрпоу",
            "мфо",
            "договір",
            "індекс",
            "іпн",
            "лотерея",
            "тираж",
            "рахунку",
            "поліс",
            "квиток",
            "квитка",
            "справи",
            "справа",
            "серійний",
            "версія",
            "накладн",
        ],
    ),
    (
        "fa",
        &[
            "سفارش",
            "کد پستی",
            "کد ملی",
            "بارکد",
            "فاکتور",
            "پیگیری",
            "حساب",
            "قرعه",
            "قرعه‌کشی",
            "شناسه",
            "مالیاتی",
            "شبا",
            "لاتاری",
            "بلیط",
            "بلیت",
            "کارت ملی",
            "گواهینامه",
            "پرونده",
        ],
    ),
    (
        "ar",
        &[
            "الطلب",
            "طلب",
            "فاتورة",
            "السجل التجاري",
            "الشحنة",
            "تتبع",
            "حساب",
            "الحساب",
            "الضريبي",
            "ضريبي",
            "يانصيب",
            "السحب",
            "التذكرة",
            "تذكرة",
            "الهوية",
            "هوية",
            "العضوية",
            "رخصة",
            "القضية",
            "قضية",
            "باركود",
            "الباركود",
            "بوليصة",
        ],
    ),
    (
        "zh",
        &[
            "订单",
            "訂單",
            "单号",
            "單號",
            "快递",
            "快遞",
            "身份证",
            "发票",
            "發票",
            "条形码",
            "时间戳",
            "区号",
            "税号",
            "稅號",
            "账号",
            "帳號",
            "账户",
            "帳戶",
            "彩票",
            "开奖",
            "開獎",
            "信用代码",
            "邮编",
            "郵編",
            "邮政编码",
            "会员",
            "會員",
            "车票",
            "車票",
            "驾照",
            "駕照",
            "保单",
            "保單",
            "版本",
        ],
    ),
    (
        "es",
        &[
            "pedido",
            "factura",
            "seguimiento",
            "referencia",
            "dni",
            "cif",
            "nif",
            "código de barras",
            "lotería",
            "cuenta",
            "sorteo",
            "iva",
            "póliza",
            "billete",
            "socio",
            "licencia",
            "fiscal",
            "cliente",
            "rut",
            "rfc",
            "curp",
            "expediente",
            "contrato",
            "cuit",
            "cuil",
        ],
    ),
    (
        "pt",
        &[
            "pedido",
            "nota fiscal",
            "rastreio",
            "cpf",
            "cnpj",
            "cep",
            "boleto",
            "mega-sena",
            "conta",
            "loteria",
            "nif",
            "nipc",
            "apólice",
            "bilhete",
            "sócio",
            "carteira de motorista",
            "cliente",
            "rg",
            "renavam",
            "processo",
            "contrato",
        ],
    ),
    (
        "de",
        &[
            "bestellung",
            "bestellnummer",
            "rechnung",
            "rechnungsnummer",
            "vertrag",
            "sendungsnummer",
            "steuernummer",
            "kundennummer",
            "aktenzeichen",
            "plz",
            "konto",
            "kontonummer",
            "ust-idnr",
            "ust-id",
            "steuer-id",
            "lotto",
            "ziehung",
            "police",
            "versicherungsnummer",
            "mitgliedsnummer",
            "führerschein",
            "ticket",
            "seriennummer",
        ],
    ),
    (
        "fr",
        &[
            "commande",
            "facture",
            "suivi",
            "siret",
            "siren",
            "dossier",
            "colis",
            "compte",
            "tva",
            "loto",
            "tirage",
            "fiscal",
            "billet",
            "adhérent",
            "permis",
            "sécurité sociale",
            "client",
            "rcs",
            "numéro de sécu",
            "contrat",
        ],
    ),
    (
        "it",
        &[
            "ordine",
            "fattura",
            "spedizione",
            "p.iva",
            "partita iva",
            "codice fiscale",
            "pratica",
            "conto",
            "lotto",
            "estrazione",
            "cap",
            "polizza",
            "biglietto",
            "tessera",
            "patente",
            "cliente",
            "matricola",
            "protocollo",
            "contratto",
        ],
    ),
    (
        "tr",
        &[
            "sipariş", "fatura", "takip", "kargo", "vergi", "dosya", "loto", "hesap", "piyango",
            "vkn", "tckn", "vergi no", "poliçe", "bilet", "üyelik", "ehliyet", "sürüm",
        ],
    ),
    (
        "hi",
        &[
            "ऑर्डर",
            "आर्डर",
            "बिल",
            "ट्रैकिंग",
            "पीएनआर",
            "खाता",
            "लॉटरी",
            "जीएसटी",
            "पैन",
            "पिन कोड",
            "पिनकोड",
            "टिकट",
            "सदस्यता",
            "लाइसेंस",
            "पॉलिसी",
        ],
    ),
    ("id", &["pesanan", "resi", "faktur", "npwp", "nik"]),
    (
        "ja",
        &[
            "注文",
            "追跡",
            "請求書",
            "伝票",
            "品番",
            "郵便",
            "口座",
            "法人番号",
            "宝くじ",
            "ロト",
            "janコード",
            "バーコード",
            "登録番号",
            "〒",
            "会員",
            "保険証",
            "免許",
            "チケット",
            "切符",
            "契約番号",
            "口座番号",
        ],
    ),
    (
        "ko",
        &[
            "주문",
            "운송장",
            "송장",
            "영수증",
            "주민",
            "사업자",
            "계좌",
            "로또",
            "바코드",
            "등록번호",
            "우편번호",
            "회원",
            "면허",
            "운전면허",
            "티켓",
            "보험",
        ],
    ),
];

/// Currencies and amount words that, right after a number, make it an amount (not a phone
/// or a code).
pub(crate) const AMOUNT_AFTER: &[&str] = &[
    "$",
    "€",
    "£",
    "₽",
    "¥",
    "₴",
    "₸",
    "%",
    "usd",
    "eur",
    "rub",
    "gbp",
    "uah",
    "руб",
    "р.",
    "грн",
    "тыс",
    "млн",
    "dollar",
    "euro",
    "pounds",
    "tl",
    "元",
    "円",
    "원",
    "ريال",
    "تومان",
    "fcfa",
    "cfa",
    "xof",
    "inr",
    "₹",
    "rs",
    "сум",
    "so'm",
    "lira",
    "reais",
    "pesos",
    "rupiah",
    "rp",
    "₺",
    "₩",
    "₦",
    "naira",
    "درهم",
    "جنيه",
];

/// The names of the digits 0–9, as people read a code aloud (`four one nine two seven`,
/// `cinco, ocho, cero`, `사, 일, 구`). Kana spellings are left out: split per character, as
/// text without spaces is, they would not survive.
pub(crate) const DIGIT_NAMES: &[(&str, &[(&str, u8)])] = &[
    (
        "en",
        &[
            ("zero", 0),
            ("oh", 0),
            ("one", 1),
            ("two", 2),
            ("three", 3),
            ("four", 4),
            ("five", 5),
            ("six", 6),
            ("seven", 7),
            ("eight", 8),
            ("nine", 9),
        ],
    ),
    (
        "ru",
        &[
            ("ноль", 0),
            ("нуль", 0),
            ("один", 1),
            ("одна", 1),
            ("два", 2),
            ("две", 2),
            ("три", 3),
            ("четыре", 4),
            ("пять", 5),
            ("шесть", 6),
            ("семь", 7),
            ("восемь", 8),
            ("девять", 9),
        ],
    ),
    (
        "uk",
        &[
            ("нуль", 0),
            ("один", 1),
            ("одна", 1),
            ("два", 2),
            ("дві", 2),
            ("три", 3),
            ("чотири", 4),
            ("п'ять", 5),
            ("пʼять", 5),
            ("п’ять", 5),
            ("шість", 6),
            ("сім", 7),
            ("вісім", 8),
            ("дев'ять", 9),
            ("девʼять", 9),
            ("дев’ять", 9),
        ],
    ),
    (
        "fa",
        &[
            ("صفر", 0),
            ("یک", 1),
            ("دو", 2),
            ("سه", 3),
            ("چهار", 4),
            ("پنج", 5),
            ("شش", 6),
            ("هفت", 7),
            ("هشت", 8),
            ("نه", 9),
        ],
    ),
    (
        "ar",
        &[
            ("صفر", 0),
            ("واحد", 1),
            ("اثنان", 2),
            ("اثنين", 2),
            ("ثلاثة", 3),
            ("أربعة", 4),
            ("اربعة", 4),
            ("خمسة", 5),
            ("ستة", 6),
            ("سبعة", 7),
            ("ثمانية", 8),
            ("تسعة", 9),
        ],
    ),
    (
        "zh",
        &[
            ("零", 0),
            ("〇", 0),
            ("一", 1),
            ("幺", 1),
            ("二", 2),
            ("两", 2),
            ("三", 3),
            ("四", 4),
            ("五", 5),
            ("六", 6),
            ("七", 7),
            ("八", 8),
            ("九", 9),
        ],
    ),
    (
        "es",
        &[
            ("cero", 0),
            ("uno", 1),
            ("dos", 2),
            ("tres", 3),
            ("cuatro", 4),
            ("cinco", 5),
            ("seis", 6),
            ("siete", 7),
            ("ocho", 8),
            ("nueve", 9),
        ],
    ),
    (
        "pt",
        &[
            ("zero", 0),
            ("um", 1),
            ("uma", 1),
            ("dois", 2),
            ("duas", 2),
            ("três", 3),
            ("quatro", 4),
            ("cinco", 5),
            ("seis", 6),
            ("meia", 6),
            ("sete", 7),
            ("oito", 8),
            ("nove", 9),
        ],
    ),
    (
        "de",
        &[
            ("null", 0),
            ("eins", 1),
            ("zwei", 2),
            ("zwo", 2),
            ("drei", 3),
            ("vier", 4),
            ("fünf", 5),
            ("sechs", 6),
            ("sieben", 7),
            ("acht", 8),
            ("neun", 9),
        ],
    ),
    (
        "fr",
        &[
            ("zéro", 0),
            ("un", 1),
            ("une", 1),
            ("deux", 2),
            ("trois", 3),
            ("quatre", 4),
            ("cinq", 5),
            ("six", 6),
            ("sept", 7),
            ("huit", 8),
            ("neuf", 9),
        ],
    ),
    (
        "it",
        &[
            ("zero", 0),
            ("uno", 1),
            ("due", 2),
            ("tre", 3),
            ("quattro", 4),
            ("cinque", 5),
            ("sei", 6),
            ("sette", 7),
            ("otto", 8),
            ("nove", 9),
        ],
    ),
    (
        "tr",
        &[
            ("sıfır", 0),
            ("bir", 1),
            ("iki", 2),
            ("üç", 3),
            ("dört", 4),
            ("beş", 5),
            ("altı", 6),
            ("yedi", 7),
            ("sekiz", 8),
            ("dokuz", 9),
        ],
    ),
    (
        "hi",
        &[
            ("शून्य", 0),
            ("एक", 1),
            ("दो", 2),
            ("तीन", 3),
            ("चार", 4),
            ("पांच", 5),
            ("पाँच", 5),
            ("छह", 6),
            ("सात", 7),
            ("आठ", 8),
            ("नौ", 9),
        ],
    ),
    (
        "id",
        &[
            ("nol", 0),
            ("kosong", 0),
            ("satu", 1),
            ("dua", 2),
            ("tiga", 3),
            ("empat", 4),
            ("lima", 5),
            ("enam", 6),
            ("tujuh", 7),
            ("delapan", 8),
            ("sembilan", 9),
        ],
    ),
    (
        "ko",
        &[
            ("공", 0),
            ("영", 0),
            ("일", 1),
            ("이", 2),
            ("삼", 3),
            ("사", 4),
            ("오", 5),
            ("육", 6),
            ("칠", 7),
            ("팔", 8),
            ("구", 9),
        ],
    ),
];

/// The longest name in [`DIGIT_NAMES`], in characters (`sembilan`): longer words need no look-up.
pub(crate) const LONGEST_DIGIT_NAME: usize = 8;

/// The digit a word names, in any language of [`DIGIT_NAMES`] (lower-cased word).
pub(crate) fn digit_named(word: &str) -> Option<u8> {
    static NAMES: LazyLock<std::collections::HashMap<&'static str, u8>> = LazyLock::new(|| {
        DIGIT_NAMES
            .iter()
            .flat_map(|(_, names)| names.iter().copied())
            .collect()
    });
    NAMES.get(word).copied()
}

/// Words that announce a pair of user name and password (`admin login: admin / S3cret!`,
/// `identifiants : lucas.b / Dino2015!!`).
pub(crate) const LOGIN: &[Lang] = &[
    (
        "en",
        &[
            "login",
            "log in",
            "credentials",
            "creds",
            "access",
            "account",
            "user",
        ],
    ),
    ("ru", &["логин", "доступ", "вход", "учётка", "учетка"]),
    ("uk", &["логін", "доступ", "вхід"]),
    ("fa", &["ورود", "نام کاربری", "اکانت"]),
    ("ar", &["بيانات الدخول", "الدخول", "المستخدم", "حساب"]),
    ("zh", &["登录", "登入", "账号", "帳號", "账户"]),
    ("es", &["acceso", "credenciales", "usuario", "cuenta"]),
    (
        "pt",
        &["acesso", "credenciais", "usuário", "usuario", "conta"],
    ),
    (
        "de",
        &["zugang", "zugangsdaten", "anmeldung", "konto", "benutzer"],
    ),
    (
        "fr",
        &["identifiants", "accès", "acces", "compte", "connexion"],
    ),
    ("it", &["accesso", "credenziali", "utente", "account"]),
    ("tr", &["giriş", "kullanıcı", "hesap"]),
    ("hi", &["लॉगिन", "खाता"]),
    ("id", &["akun", "masuk"]),
    ("ja", &["ログイン", "管理画面", "アカウント"]),
    ("ko", &["로그인", "계정", "아이디"]),
];

/// Words that announce a login or verification code.
pub(crate) const CODE: &[Lang] = &[
    (
        "en",
        &[
            "code",
            "login code",
            "verification code",
            "security code",
            "passcode",
            "otp",
            "one-time password",
            "one time password",
            "2fa",
            "pushtan",
            "tan",
            "token",
            "one-time code",
            "one time code",
            "confirmation code",
            "access code",
            "sms code",
            "one-time pin",
            "one time pin",
            "tac",
        ],
    ),
    (
        "ru",
        &[
            "код",
            "кодом",
            "пароль из смс",
            "код из смс",
            "пароль",
            "одноразовый пароль",
            "код подтверждения",
            "кода",
            "коду",
            "коде",
            "коды",
            "кодик",
            "кодов",
        ],
    ),
    (
        "uk",
        &[
            "код",
            "пароль",
            "одноразовий пароль",
            "код підтвердження",
            "коду",
            "кодом",
            "коди",
            "кодик",
        ],
    ),
    (
        "fa",
        &[
            "کد",
            "کدت",
            "کدتون",
            "رمز",
            "رمز یکبار مصرف",
            // A bank's dynamic second password (`رمز دوم پویا بانک ملی: 68349151`).
            "رمز دوم",
            "رمز پویا",
            "کد تایید",
            "کد تأیید",
            "کد ورود",
        ],
    ),
    (
        "ar",
        &[
            "رمز",
            "كود",
            "الرمز",
            "الكود",
            "رمز التحقق",
            "رمزك",
            "كودك",
            "كلمة المرور",
            "رمز الدخول",
            "لتأكيد",
            "الرقم السري المؤقت",
        ],
    ),
    (
        "zh",
        &[
            "验证码",
            "驗證碼",
            "登录码",
            "登錄碼",
            "登录代码",
            "登錄代碼",
            "校验码",
            "动态码",
            "代码",
            "码是",
            "碼是",
            "动态密码",
            "動態密碼",
            "动态口令",
            "短信码",
            "验证代码",
            "登入碼",
            "登入码",
            "认证码",
            "認證碼",
            "yanzhengma",
        ],
    ),
    (
        "es",
        &[
            "código",
            "codigo",
            "clave de acceso",
            "cód",
            "cód.",
            "clave",
            "clave de operación",
            "código de verificación",
        ],
    ),
    (
        "pt",
        &[
            "código",
            "codigo",
            "cód",
            "cód.",
            "código de confirmação",
            "código de acesso",
            "código de verificação",
            "cod",
            "senha temporária",
            "senha temporaria",
        ],
    ),
    (
        "de",
        &[
            "code",
            "anmeldecode",
            "bestätigungscode",
            "zugangscode",
            "login-code",
            "tan",
            "pushtan",
            "sicherheitscode",
            "einmalpasswort",
            "einmalkennwort",
            "freigabecode",
            "aktivierungscode",
            "freischaltcode",
            "phototan",
            "chiptan",
            "smstan",
            "sms-tan",
            "mtan",
            "m-tan",
            "apptan",
            "mobiletan",
            "verifizierungscode",
            "einmalcode",
        ],
    ),
    (
        "fr",
        &[
            "code",
            "code de connexion",
            "code de validation",
            "code de vérification",
        ],
    ),
    (
        "it",
        &[
            "codice",
            "codice di accesso",
            "codice di verifica",
            "otp",
            "codice otp",
            "codice di conferma",
        ],
    ),
    (
        "tr",
        &[
            "kod",
            "kodu",
            "kodunuz",
            "kodunuzdur",
            "şifre",
            "şifreniz",
            "doğrulama",
            "onay kodu",
            "doğrulama kodu",
            "tek kullanımlık şifre",
            "kodun",
            "giriş kodun",
        ],
    ),
    ("hi", &["कोड", "ओटीपी", "otp", "ओटीपी कोड", "सत्यापन कोड"]),
    (
        "id",
        &["kode", "kodenya", "otp", "kode verifikasi", "kode otp"],
    ),
    (
        "ja",
        &[
            "コード",
            "認証番号",
            "確認コード",
            "認証コード",
            "ワンタイムパスワード",
            "暗証番号",
            "ワンタイムコード",
            "確認番号",
            "認証キー",
        ],
    ),
    (
        "ko",
        &[
            "코드",
            "인증번호",
            "인증 번호",
            "인증코드",
            "확인코드",
            "otp",
            "승인번호",
        ],
    ),
];

/// Services whose messages carry login codes: a code-sized number right next to one is a code
/// even without a code word (`hab 92706 von Telegram bekommen`).
pub(crate) const CODE_SERVICE: &[Lang] = &[
    (
        "en",
        &[
            "telegram",
            "whatsapp",
            "instagram",
            "signal",
            "viber",
            // The apps that show codes (`Authenticator zeigt 593244`).
            "authenticator",
            "authy",
        ],
    ),
    ("ru", &["телеграм", "телеграмм", "телеги"]),
    ("uk", &["телеграм"]),
    ("fa", &["تلگرام"]),
    ("ar", &["تيليجرام", "تلغرام", "تليجرام"]),
    ("zh", &["电报", "電報"]),
    ("hi", &["टेलीग्राम"]),
    ("ja", &["テレグラム"]),
    ("ko", &["텔레그램"]),
];

/// The warning of a one-time-code message not to pass it on (`Não compartilhe.`, `Никому не
/// сообщайте код`): services put it in the message, often in a sentence of its own.
pub(crate) const SHARE_WARNING: &[Lang] = &[
    (
        "en",
        &[
            "do not share",
            "don't share",
            "dont share",
            "never share",
            "do not disclose",
            "never disclose",
            "do not give this",
            "don't give this",
            "do not give it",
            "don't give it",
            "do not tell anyone",
            "don't tell anyone",
            "do not forward",
            "never give",
        ],
    ),
    (
        "ru",
        &[
            "никому не",
            "не сообщайте",
            "не передавайте",
            "не говорите его",
            "не пересылайте",
        ],
    ),
    (
        "uk",
        &[
            "нікому не",
            "не повідомляйте",
            "не передавайте",
            "не кажіть",
        ],
    ),
    (
        "fa",
        &[
            "به کسی ندهید",
            "به هیچ کس",
            "در اختیار دیگران قرار ندهید",
            "فاش نکنید",
        ],
    ),
    ("ar", &["لا تشارك", "لا تعط", "لا تفصح", "لا تخبر", "لا تعطي"]),
    (
        "zh",
        &[
            "不要告诉",
            "请勿泄露",
            "切勿泄露",
            "勿告知",
            "不要泄露",
            "切勿告诉",
            "请勿转发",
            "勿向他人",
            "不要透露",
            "請勿洩露",
            "切勿洩露",
        ],
    ),
    (
        "es",
        &[
            "no compartas",
            "no lo compartas",
            "no la compartas",
            "no comparta",
            "nunca compartas",
            "no se lo des",
            "no lo reveles",
        ],
    ),
    (
        "pt",
        &[
            "não compartilhe",
            "nao compartilhe",
            "não partilhe",
            "nunca compartilhe",
            "não forneça",
            "não informe este",
            "nunca informe",
        ],
    ),
    (
        "de",
        &[
            "nicht weitergeben",
            "niemals weiter",
            "gib ihn nicht",
            "geben sie ihn nicht",
            "geben sie diesen code nicht",
            "nicht teilen",
            "an niemanden",
        ],
    ),
    (
        "fr",
        &[
            "ne le partagez",
            "ne partagez",
            "ne le communiquez",
            "ne communiquez",
            "ne le donnez",
            "ne le transmettez",
            "ne le divulguez",
        ],
    ),
    (
        "it",
        &[
            "non condividere",
            "non condividerlo",
            "non comunicarlo",
            "non comunicare a nessuno",
            "non fornirlo",
            "non rivelare",
        ],
    ),
    (
        "tr",
        &[
            "paylaşmayın",
            "kimseyle paylaş",
            "kimseye vermeyin",
            "kimseye söylemeyin",
        ],
    ),
    (
        "hi",
        &[
            "साझा न करें",
            "किसी को न बताएं",
            "किसी को भी न",
            "शेयर न करें",
            "share na kare",
        ],
    ),
    (
        "id",
        &[
            "jangan berikan",
            "jangan bagikan",
            "jangan beritahu",
            "jangan memberikan",
            "jangan sebarkan",
            "rahasiakan",
        ],
    ),
    (
        "ja",
        &[
            "誰にも教えない",
            "他人に教えない",
            "絶対に教え",
            "共有しないで",
            "教えないで",
        ],
    ),
    (
        "ko",
        &[
            "알려주지 마",
            "공유하지 마",
            "타인에게 알려",
            "절대 알려",
            "누구에게도",
        ],
    ),
    ("uz", &["hech kimga"]),
];

/// Words that make a code another kind of code (postal, promo, error, pickup …).
pub(crate) const CODE_NOT: &[Lang] = &[
    (
        "en",
        &[
            "zip",
            "postal",
            "post",
            "area",
            "country",
            "error",
            "status",
            "exit",
            "return",
            "response",
            "http",
            "promo",
            "discount",
            "coupon",
            "merchant",
            "gift",
            "referral",
            "invite",
            "invitation",
            "product",
            "item",
            "tax",
            "dialing",
            "dialling",
            "source",
            "bar",
            "qr",
            "color",
            "colour",
            "hex",
            "sort",
            "swift",
            "bic",
            "bank",
            "branch",
            "region",
            "airport",
            "station",
            "course",
            "class",
            "reference",
            "ref",
            "booking",
            "tracking",
            "voucher",
            "order",
            "ticket",
            "reservation",
            "sku",
            "article",
            "part",
            "style",
            "model",
            "lottery",
            "room",
            "flight",
            "version",
            "line",
            "lines",
            "pr",
            "pull request",
            "commit",
            "issue",
            "module",
            "subject",
            "zip code",
            "postal code",
            "pin",
            "pincode",
            "seconds",
            "second",
            "sec",
            "minutes",
            "minute",
            "template",
            "door",
            "gate",
            "intercom",
            "entry code",
            "lockbox",
        ],
    ),
    ("pl", &["pocztowy"]),
    (
        "ru",
        &[
            "почтовый",
            "промо",
            "промокод",
            "ошибки",
            "ошибка",
            "товара",
            "продукта",
            "региона",
            "страны",
            "города",
            "купона",
            "скидки",
            "заказа",
            "бронирования",
            "индекс",
            "оквэд",
            "инн",
            "курс",
            "курса",
            "предмета",
            "статья",
            "секунд",
            "секунды",
            "минут",
            "поддержку",
            "поддержка",
            "домофон",
            "домофона",
        ],
    ),
    (
        "uk",
        &[
            "помилки",
            "квед",
            "єдрпоу",
            "поштовий",
            "індекс",
            "знижки",
            "стаття",
        ],
    ),
    (
        "fa",
        &["پستی", "ملی", "اقتصادی", "تخفیف", "خطا", "پیش‌شماره", "کالا"],
    ),
    ("ar", &["الخصم", "خصم", "البريدي", "خطأ"]),
    (
        "zh",
        &[
            "取件码",
            "取件碼",
            "区号",
            "區號",
            "邮编",
            "郵編",
            "优惠码",
            "優惠碼",
            "错误码",
            "錯誤碼",
            "课程",
            "課程",
        ],
    ),
    (
        "es",
        &[
            "postal",
            "promocional",
            "descuento",
            "error",
            "prefijo",
            "curso",
            "asignatura",
            "artículo",
            "articulo",
            "segundos",
            "minutos",
            "recogida",
            "portal",
            "puerta",
            "portero",
            "área",
        ],
    ),
    (
        "pt",
        &[
            "postal",
            "promocional",
            "desconto",
            "erro",
            "ddd",
            "cep",
            "curso",
            "disciplina",
            "artigo",
            "portão",
            "portaria",
            "área",
        ],
    ),
    (
        "de",
        &[
            "postleitzahl",
            "plz",
            "rabatt",
            "gutschein",
            "fehler",
            "vorwahl",
            "kurs",
            "kursnummer",
            "sekunden",
            "haustür",
            "tür",
            "türcode",
            "hoftor",
            "briefkasten",
        ],
    ),
    (
        "fr",
        &[
            "postal",
            "promo",
            "réduction",
            "erreur",
            "cours",
            "article",
            "banque",
            "guichet",
            "secondes",
            "digicode",
            "portail",
            "interphone",
        ],
    ),
    (
        "it",
        &[
            "postale", "sconto", "errore", "prefisso", "corso", "materia", "articolo", "citofono",
            "portone", "cancello",
        ],
    ),
    (
        "tr",
        &[
            "posta", "indirim", "hata", "alan", "ders", "şube", "madde", "kapı",
        ],
    ),
    ("hi", &["पिन", "प्रोमो", "डिस्काउंट", "शाखा", "कूपन"]),
    (
        "id",
        &[
            "pos", "voucher", "promo", "area", "diskon", "pasal", "gedung", "pintu", "pagar",
        ],
    ),
    (
        "ja",
        &["郵便", "クーポン", "割引", "エラー", "品番", "履修"],
    ),
    ("ko", &["우편", "할인", "쿠폰", "오류", "에러"]),
];

/// Words that name a secret: the value after them (`k=v`, `k: v`, `"k": "v"`, `?k=v`) is one.
pub(crate) const SECRET_KEY: &[Lang] = &[
    (
        "en",
        &[
            "secret",
            "token",
            "key",
            "hash",
            "password",
            "passwd",
            "pass",
            "pwd",
            "passphrase",
            "credential",
            "credentials",
            "auth",
            "apikey",
            "api_key",
            "access_key",
            "private_key",
            "client_secret",
            "bearer",
            "sig",
            "signature",
            "salt",
            "appsid",
            "appid",
            "appsecret",
            "userkey",
            "passkey",
            "pw",
        ],
    ),
    (
        "ru",
        &[
            "пароль",
            "токен",
            "ключ",
            "секрет",
            "секретный ключ",
            "хеш",
            "хэш",
            "parol",
            "пасс",
            "пасворд",
            "пассворд",
        ],
    ),
    ("uk", &["пароль", "токен", "ключ", "секрет", "хеш"]),
    (
        "fa",
        &[
            "رمز عبور",
            "پسورد",
            "توکن",
            "کلید",
            "رمز",
            "ramz",
            "pasvord",
        ],
    ),
    (
        "ar",
        &[
            "كلمة السر",
            "كلمة المرور",
            "الباسورد",
            "باسورد",
            "الرمز السري",
            "المفتاح",
            "مفتاح",
            "توكن",
            "التوكن",
            "كلمة سر",
            "كلمة مرور",
            "الرقم السري",
            "kalimat al sir",
            "kalimat alsir",
            "kalimat sir",
            "kalimat al murur",
        ],
    ),
    (
        "zh",
        &[
            "密码",
            "密碼",
            "密钥",
            "密鑰",
            "秘钥",
            "令牌",
            "口令",
            "授权码",
            "授權碼",
            "mima",
        ],
    ),
    (
        "es",
        &["contraseña", "clave", "secreto", "token", "contrasena"],
    ),
    (
        "pt",
        &["senha", "chave", "segredo", "token", "palavra-passe"],
    ),
    (
        "de",
        &[
            "passwort",
            "kennwort",
            "schlüssel",
            "geheimnis",
            "token",
            "schluessel",
        ],
    ),
    (
        "fr",
        &["mot de passe", "mdp", "clé", "secret", "jeton", "cle"],
    ),
    (
        "it",
        &[
            "password",
            "chiave",
            "segreto",
            "token",
            "parola d'ordine",
            "parola d’ordine",
        ],
    ),
    (
        "tr",
        &[
            "şifre",
            "şifresi",
            "parola",
            "anahtar",
            "anahtarı",
            "token",
            "sifre",
            "sifresi",
            "gizli",
        ],
    ),
    ("hi", &["पासवर्ड", "कुंजी", "टोकन", "गुप्त"]),
    ("id", &["kata sandi", "sandi", "kunci", "rahasia", "token"]),
    (
        "ja",
        &[
            "パスワード",
            "秘密鍵",
            "シークレット",
            "トークン",
            "キー",
            "暗号鍵",
        ],
    ),
    (
        "ko",
        &[
            "비밀번호",
            "비번",
            "암호",
            "토큰",
            "시크릿",
            "키",
            "패스워드",
            "bibeon",
            "bimilbeonho",
        ],
    ),
];

/// Words that announce a list of recovery (backup) codes: each code opens the account once.
pub(crate) const RECOVERY: &[Lang] = &[
    ("en", &["backup", "recovery", "one-time use", "single-use"]),
    ("ru", &["резервн", "восстановлени", "запасн"]),
    ("uk", &["резервн", "відновлення", "запасн"]),
    ("fa", &["پشتیبان", "بازیابی", "یدک"]),
    (
        "ar",
        &["احتياطي", "احتياطية", "الاسترداد", "استرداد", "الاسترجاع"],
    ),
    ("zh", &["备用", "備用", "恢复码", "恢復碼", "救援"]),
    (
        "es",
        &["respaldo", "recuperación", "recuperacion", "reserva"],
    ),
    ("pt", &["backup", "recuperação", "recuperacao", "reserva"]),
    ("de", &["backup", "wiederherstellung", "notfall", "ersatz"]),
    (
        "fr",
        &["secours", "récupération", "recuperation", "sauvegarde"],
    ),
    ("it", &["backup", "recupero", "riserva", "emergenza"]),
    ("tr", &["yedek", "kurtarma"]),
    ("hi", &["बैकअप", "रिकवरी", "बैकअप कोड"]),
    ("id", &["cadangan", "pemulihan"]),
    (
        "ja",
        &["バックアップ", "リカバリー", "リカバリ", "復旧", "予備"],
    ),
    ("ko", &["백업", "복구", "예비"]),
];

/// Words right before a secret key word that make its value public (`commit hash:`,
/// `public key:`).
pub(crate) const SECRET_NOT: &[Lang] = &[
    (
        "en",
        &[
            "commit",
            "public",
            "tx",
            "transaction",
            "file",
            "sha",
            "sha256",
            "md5",
            "git",
            "block",
            "sort",
            "primary",
            "foreign",
            "idempotency",
            "cache",
            "site key",
            "fingerprint",
            "publishable",
        ],
    ),
    ("ru", &["публичный", "открытый", "коммит", "транзакции"]),
    ("uk", &["публічний", "відкритий", "коміт", "транзакції"]),
    ("de", &["öffentlicher", "öffentliche"]),
    ("fr", &["publique", "public"]),
    ("es", &["pública", "publica", "público"]),
    ("pt", &["pública", "publica", "pix"]),
    ("it", &["pubblica"]),
    ("tr", &["açık", "herkese açık"]),
    ("ja", &["公開"]),
    ("ko", &["공개"]),
    ("zh", &["公钥", "公開"]),
    ("ar", &["العام"]),
];

/// Words that announce a payment card: the word itself and the card brands, national schemes
/// included (a number of a scheme outside the well-known ranges, `Узкард 8600 …`, `BC카드 94…`,
/// counts as a card only with one of these near).
pub(crate) const CARD: &[Lang] = &[
    (
        "en",
        &[
            "card",
            "credit card",
            "debit card",
            "visa",
            "mastercard",
            "maestro",
            "amex",
            "uatp",
            "rupay",
            "unionpay",
            "discover",
            "jcb",
            "diners",
        ],
    ),
    (
        "ru",
        &[
            "карта",
            "карты",
            "карту",
            "картой",
            "карточка",
            "узкард",
            "хумо",
            "белкарт",
            "мир",
        ],
    ),
    ("uk", &["картка", "картки", "картку", "карта", "карти"]),
    ("fa", &["کارت", "شماره کارت"]),
    ("ar", &["بطاقة", "بطاقتي", "البطاقة", "بطاقه", "مدى"]),
    (
        "zh",
        &[
            "卡",
            "卡号",
            "卡號",
            "银行卡",
            "銀行卡",
            "信用卡",
            "借记卡",
            "银联",
        ],
    ),
    ("es", &["tarjeta"]),
    ("pt", &["cartão", "cartao", "elo", "hipercard"]),
    ("de", &["karte", "kreditkarte", "girocard", "ec-karte"]),
    ("fr", &["carte", "cb"]),
    ("it", &["carta", "bancomat", "postepay"]),
    ("tr", &["kart", "kartı", "kartim", "kartım", "troy"]),
    ("hi", &["कार्ड"]),
    ("id", &["kartu", "gpn"]),
    ("ja", &["カード"]),
    ("ko", &["카드", "신용카드", "체크카드"]),
];

/// A table compiled into one automaton.
pub(crate) struct Words {
    ac: AhoCorasick,
    lens: Vec<usize>,
    /// The second half of a one-letter compound (`e-posta`, `A-Bank`) is no match: for the
    /// words that veto (an e-mail is no postal code), not for those that name (`m-Token`).
    compounds_apart: bool,
}

impl Words {
    /// A table whose words veto: see [`Words::compounds_apart`].
    fn vetoes(table: &[Lang]) -> Words {
        Words {
            compounds_apart: true,
            ..Words::new(table)
        }
    }

    fn new(table: &[Lang]) -> Words {
        let words: Vec<&str> = table
            .iter()
            .flat_map(|(_, ws)| ws.iter().copied())
            .collect();
        let lens = words.iter().map(|w| w.chars().count()).collect();
        // The words are constants of this file; a unit test builds every table.
        let ac = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&words)
            .unwrap_or_else(|e| panic!("context words do not compile: {e}"));
        Words {
            ac,
            lens,
            compounds_apart: false,
        }
    }

    /// Every occurrence in `hay` (already lower-cased) that respects the boundary rules.
    pub(crate) fn find<'h>(&'h self, hay: &'h str) -> impl Iterator<Item = Range<usize>> + 'h {
        self.ac.find_iter(hay).filter_map(move |m| {
            let r = m.range();
            let w = &hay[r.clone()];
            let spaced = w.chars().next().is_some_and(|c| !no_space_script(c));
            if spaced
                && w.starts_with(char::is_alphanumeric)
                && ((is_word(prev(hay, r.start)) && !arabic_proclitic(hay, r.start))
                    || (self.compounds_apart && letter_compound(hay, r.start)))
            {
                return None;
            }
            let short = self.lens[m.pattern().as_usize()] < 4;
            if spaced && short && w.ends_with(char::is_alphanumeric) && is_word(next(hay, r.end)) {
                return None;
            }
            Some(r)
        })
    }

    /// True when any word occurs in `hay` (lower-cased).
    pub(crate) fn any(&self, hay: &str) -> bool {
        self.find(hay).next().is_some()
    }
}

pub(crate) static PHONE_WORDS: LazyLock<Words> = LazyLock::new(|| Words::new(PHONE));
pub(crate) static NUMBER_WORDS: LazyLock<Words> = LazyLock::new(|| Words::new(NUMBER));
pub(crate) static ID_WORDS: LazyLock<Words> = LazyLock::new(|| Words::new(ID));
pub(crate) static CODE_WORDS: LazyLock<Words> = LazyLock::new(|| Words::new(CODE));
pub(crate) static CODE_SERVICES: LazyLock<Words> = LazyLock::new(|| Words::new(CODE_SERVICE));
pub(crate) static CODE_NOT_WORDS: LazyLock<Words> = LazyLock::new(|| Words::vetoes(CODE_NOT));
pub(crate) static SHARE_WARNINGS: LazyLock<Words> = LazyLock::new(|| Words::new(SHARE_WARNING));
pub(crate) static SECRET_NOT_WORDS: LazyLock<Words> = LazyLock::new(|| Words::new(SECRET_NOT));
pub(crate) static CARD_WORDS: LazyLock<Words> = LazyLock::new(|| Words::new(CARD));
pub(crate) static LOGIN_WORDS: LazyLock<Words> = LazyLock::new(|| Words::new(LOGIN));
pub(crate) static RECOVERY_WORDS: LazyLock<Words> = LazyLock::new(|| Words::new(RECOVERY));

/// Chinese, Japanese, Korean and Thai are written without spaces between words: their letters
/// are no word boundary problem for a number glued to them.
pub(crate) fn no_space_script(c: char) -> bool {
    matches!(c,
        '\u{0E00}'..='\u{0E7F}'   // Thai
        | '\u{1100}'..='\u{11FF}' // Hangul Jamo
        | '\u{3040}'..='\u{30FF}' // Hiragana, Katakana
        | '\u{3130}'..='\u{318F}' // Hangul compatibility Jamo
        | '\u{3400}'..='\u{4DBF}' // CJK extension A
        | '\u{4E00}'..='\u{9FFF}' // CJK unified ideographs
        | '\u{AC00}'..='\u{D7AF}' // Hangul syllables
        | '\u{F900}'..='\u{FAFF}' // CJK compatibility ideographs
        | '\u{FF66}'..='\u{FF9F}' // halfwidth Katakana
    )
}

/// A character that continues a word (letters, digits, `_`, combining marks), except the
/// letters of scripts written without spaces.
pub(crate) fn is_word(c: Option<char>) -> bool {
    c.is_some_and(|c| (c.is_alphanumeric() || c == '_' || is_mark(c)) && !no_space_script(c))
}

/// Combining marks of the Indic and Arabic scripts (vowel signs, viramas, harakat), which are
/// part of words but neither letters nor digits to `char`.
fn is_mark(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}'
        | '\u{064B}'..='\u{065F}'
        | '\u{0670}'
        | '\u{0900}'..='\u{0903}'
        | '\u{093A}'..='\u{094F}'
        | '\u{0951}'..='\u{0957}'
        | '\u{0962}'..='\u{0963}'
        | '\u{200C}'..='\u{200D}'
    )
}

/// The Arabic word at `i` carries a one-letter prefix written as part of it (`و` and, `ب` with,
/// `ل` for, `ف` so, `ك` as: `وبطاقتي` is "and my card").
fn arabic_proclitic(s: &str, i: usize) -> bool {
    let Some(p) = prev(s, i) else {
        return false;
    };
    let starts_arabic = next(s, i).is_some_and(|c| ('\u{0600}'..='\u{06FF}').contains(&c));
    starts_arabic && matches!(p, 'و' | 'ب' | 'ل' | 'ف' | 'ك') && !is_word(prev(s, i - p.len_utf8()))
}

/// The word at `i` is the second half of a one-letter compound (`e-posta`, `e-mail`, `A-Bank`):
/// a word of its own (an e-mail, a bank's name), not the table's word.
pub(crate) fn letter_compound(s: &str, i: usize) -> bool {
    let mut back = s[..i].chars().rev();
    back.next() == Some('-')
        && back.next().is_some_and(char::is_alphabetic)
        && !is_word(back.next())
}

fn prev(s: &str, i: usize) -> Option<char> {
    s[..i].chars().next_back()
}

fn next(s: &str, i: usize) -> Option<char> {
    s[i..].chars().next()
}

/// Characters that end a sentence wherever they stand.
fn hard_stop(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '!' | '?' | '。' | '！' | '？' | '؟' | '؛' | ';'
    )
}

/// Words that end in a dot without ending the sentence (`tel. +7…`, `No. 5`).
const ABBREVIATIONS: &[&str] = &[
    "tel", "tél", "mob", "cód", "cod", "no", "nr", "idnr", "nro", "num", "núm", "ref", "inv",
    "ext", "dr", "mr", "mrs", "ms", "st", "co", "inc", "ltd", "vs", "etc", "ул", "тел", "моб",
    "tlf", "telf", "cel", "cell", "tlp", "hp",
];

/// A `.` that ends a sentence: followed by a space or the end, and not after an abbreviation,
/// a number (`15. März`) or a single letter (an initial: `an M. Schmidt über 250,00 EUR`).
fn sentence_dot(s: &str, i: usize) -> bool {
    if !next(s, i + 1).is_none_or(char::is_whitespace) {
        return false;
    }
    let word = word_ending_at(s, i, char::is_alphanumeric);
    let initial = word.chars().count() == 1 && word.chars().all(char::is_alphabetic);
    !initial && !ABBREVIATIONS.contains(&word.as_str())
}

/// The run of characters meeting `is_part` that ends at byte `i`, lower-cased.
pub(crate) fn word_ending_at(s: &str, i: usize, is_part: impl Fn(char) -> bool) -> String {
    let start = s[..i]
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_part(*c))
        .last()
        .map_or(i, |(j, _)| j);
    s[start..i].to_lowercase()
}

/// The text before byte `i`, back to at most `max` characters and never past the start of the
/// line or sentence, lower-cased, with the byte offset it starts at.
pub(crate) fn before_in_sentence(text: &str, i: usize, max: usize) -> (usize, String) {
    let mut start = i;
    for (j, c) in text[..i].char_indices().rev().take(max) {
        if hard_stop(c) || (c == '.' && sentence_dot(text, j)) {
            break;
        }
        start = j;
    }
    (start, text[start..i].to_lowercase())
}

/// The text after byte `i`, up to at most `max` characters and never past the end of the line
/// or sentence, lower-cased.
pub(crate) fn after_in_sentence(text: &str, i: usize, max: usize) -> String {
    let mut end = i;
    for (j, c) in text[i..].char_indices().take(max) {
        let at = i + j;
        if hard_stop(c) || (c == '.' && sentence_dot(text, at)) {
            break;
        }
        end = at + c.len_utf8();
    }
    text[i..end].to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_digit_name_is_longer_than_the_longest_looked_up() {
        let longest = DIGIT_NAMES
            .iter()
            .flat_map(|(_, names)| names.iter().map(|(w, _)| w.chars().count()))
            .max();
        assert_eq!(longest, Some(LONGEST_DIGIT_NAME));
    }

    #[test]
    fn every_table_covers_at_least_fifteen_languages_and_compiles() {
        for (name, table) in [
            ("phone", PHONE),
            ("id", ID),
            ("code", CODE),
            ("secret", SECRET_KEY),
            ("code_not", CODE_NOT),
            ("card", CARD),
            ("share_warning", SHARE_WARNING),
            ("recovery", RECOVERY),
        ] {
            assert!(table.len() >= 15, "{name}: {} languages", table.len());
            for (_, ws) in table {
                for w in *ws {
                    assert_eq!(*w, w.to_lowercase(), "{name}: {w} is not lower-case");
                }
            }
            let _ = Words::new(table);
        }
    }

    #[test]
    fn short_words_need_boundaries_and_long_ones_may_inflect() {
        let w = Words::new(PHONE);
        assert!(!w.any("hotel"));
        assert!(w.any("tel: 1"));
        assert!(w.any("телефона"));
        assert!(w.any("我电话138"));
    }

    #[test]
    fn context_stops_at_the_end_of_a_sentence_or_line() {
        let t = "call me. 12345";
        let (_, b) = before_in_sentence(t, t.len() - 5, 40);
        assert_eq!(b, " ");
        let t = "tel. 12345";
        let (_, b) = before_in_sentence(t, t.len() - 5, 40);
        assert_eq!(b, "tel. ");
        assert_eq!(after_in_sentence("1 is it\nnext", 1, 40), " is it");
    }
}
