//! Cost of redaction per event, over a realistic mix: mostly ordinary chat in many languages
//! (with the prices, dates, times and order numbers that make detectors look twice), about one
//! message in six carrying a secret. Redaction runs on every event, so this is the number that
//! must not grow unnoticed (issue 14, item 7).
//!
//! A few dozen messages over and over keep the automata's caches warm; the simulated world's
//! texts (`varied_texts`, tens of thousands of different messages in many scripts) are what the
//! pipeline sees, and where a cache too small for them shows.
//!
//! `cargo bench --bench redaction -- --warm-up-time 1 --measurement-time 5`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tgingest::policy::{RedactionConfig, RedactionTally, Redactor};
use tgingest::telegram::simulated::{SimulatedWorld, SimulatorConfig};

/// Ordinary messages: no secret in them, but numbers, links and mentions like real chats have.
const ORDINARY: &[&str] = &[
    "ok see you at 7 then, bring the charger",
    "lol that meeting could have been an email",
    "the build on main is green again, merged #4821",
    "Flight lands 14:35, terminal 2, I'll grab a taxi",
    "It's €12.50 per person, pay me back whenever",
    "Release v2.14.3 is out: https://github.com/acme/tool/releases/tag/v2.14.3",
    "Did anyone see the game? 3:2 in extra time!!",
    "Order 1234567 shipped, tracking says Thursday",
    "meeting moved to 2024-03-15 10:00, room B",
    "Привет! Как дела? Встречаемся в 18:00 у метро",
    "Скинь фотки с выходных, пожалуйста 🙏",
    "Заказ №48213 уже в пути, курьер позвонит",
    "Доброго ранку! Сьогодні о 10:30 зустріч у Zoom",
    "سلام، فردا ساعت ۱۰ جلسه داریم، فراموش نکنید",
    "قیمت این گوشی ۱۲ میلیون تومان است",
    "مرحبا، هل وصلت الشحنة؟ رقم الطلب ٤٥٦٧٨",
    "الاجتماع يوم الأحد الساعة ٣ مساءً",
    "今天下午三点开会，别迟到",
    "这个月的电费是 356 元，比上个月多了",
    "¿Vienes a la cena del sábado? Empieza a las 21:00",
    "El pedido cuesta 45,90 € con envío incluido",
    "Bom dia! A reunião foi remarcada para sexta às 9h",
    "Vou chegar às 19h30, guarda um lugar pra mim",
    "Kannst du morgen um 8 Uhr das Paket abholen?",
    "Die Rechnung über 129,00 € ist bezahlt",
    "On se retrouve devant la gare à 18h45 ?",
    "J'ai réservé pour 4 personnes samedi soir",
    "Ci vediamo domani alle 10 in ufficio",
    "Il treno delle 17:42 è in ritardo di 20 minuti",
    "Yarın saat 14:00'te toplantı var, unutma",
    "Fatura 350 TL geldi, bölüşelim mi?",
    "कल सुबह 9 बजे मीटिंग है, समय पर आना",
    "मैंने 500 रुपये भेज दिए हैं",
    "Besok jam 10 pagi kita rapat di kantor ya",
    "Harganya Rp 150.000, sudah termasuk ongkir",
    "明日の会議は10時からです。よろしくお願いします",
    "駅前のカフェで待ってるね☕",
    "내일 오후 3시에 만나요!",
    "이번 달 회비는 20,000원입니다",
    "pushed 3f9c2ab to the branch, CI should pick it up",
    "ETA 25 min, traffic on the A40 is terrible",
    "Score: 98/100 on the quiz, finally",
    "Coordinates 48.8584, 2.2945 — meet by the tower",
];

/// Messages with something to mask.
const WITH_SECRETS: &[&str] = &[
    "my email is anna.k@example.org, write there",
    "call me on +44 20 7946 0958 after six",
    "Login code: 48213. Do not give this code to anyone",
    "Код для входа в Telegram: 52917",
    "card 4111 1111 1111 1111 exp 12/27",
    "IBAN DE89 3704 0044 0532 0130 00 for the rent",
    "export OPENAI_API_KEY=sk-proj-4fG7hJ2kL9mN3pQ8rS1tU6vW0xY5zA",
    "телефон 8 (912) 345-67-89, звоните вечером",
    "bot token 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawQ",
];

fn mix() -> Vec<&'static str> {
    // Ordinary messages dominate: five rounds of them to one round of secrets.
    let mut out = Vec::new();
    for _ in 0..5 {
        out.extend_from_slice(ORDINARY);
    }
    out.extend_from_slice(WITH_SECRETS);
    out.extend_from_slice(WITH_SECRETS);
    out
}

/// The texts of the simulated world the `saturate` loadtest runs (seed 1, 50 accounts), the
/// first 400 positions of each account.
fn varied_texts() -> Vec<String> {
    let world = SimulatedWorld::new(SimulatorConfig {
        accounts: 50,
        seed: 1,
        ..SimulatorConfig::default()
    })
    .expect("simulated world");
    let mut texts = Vec::new();
    for a in 0..50 {
        for p in 0..400 {
            texts.extend(
                world
                    .event_at(a, p)
                    .events
                    .into_iter()
                    .map(|e| e.text)
                    .filter(|t| !t.is_empty()),
            );
        }
    }
    texts
}

/// Redacts every message once, as the filter stage does with each event's text.
fn redact_all<S: AsRef<str>>(redactor: &Redactor, messages: &[S]) -> RedactionTally {
    let mut tally = RedactionTally::default();
    for m in messages {
        black_box(redactor.redact(black_box(m.as_ref()), &mut tally));
    }
    tally
}

fn redaction(c: &mut Criterion) {
    let redactor = Redactor::new(&RedactionConfig::default()).expect("default redaction config");
    let messages = mix();
    // Compile everything lazily built outside the measurement.
    for m in &messages {
        black_box(redactor.find(m));
    }
    let mut group = c.benchmark_group("redaction");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("mixed_chat", |b| {
        b.iter(|| redact_all(&redactor, &messages))
    });
    group.bench_function("ordinary_only", |b| {
        b.iter(|| redact_all(&redactor, ORDINARY))
    });
    group.finish();

    let varied = varied_texts();
    let mut group = c.benchmark_group("redaction_varied");
    group.throughput(Throughput::Elements(varied.len() as u64));
    group.bench_function("simulated_world", |b| {
        b.iter(|| redact_all(&redactor, &varied))
    });
    group.finish();
}

criterion_group!(benches, redaction);
criterion_main!(benches);
