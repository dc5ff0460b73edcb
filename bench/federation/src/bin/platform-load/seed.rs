//! The readers and their study data: deterministic (the same `--users` and `--seed` give the
//! same rows on every machine), written as PostgreSQL COPY files the script loads in one
//! transaction.
//!
//! **Users** (`accounts.users`, as Clerk's `user.created` webhook makes them: the id derived
//! from the Clerk id) with the subscriptions billing would hold: every user got the sign-up
//! trial (one per user, ever); 60% are Readers whose trial ended (signed up 30–900 days before
//! the anchor), 25% are in their trial now (signed up 0–13 days before: their trial is
//! re-anchored to the run's clock by the script, `trial_age`), 12% pay for Scholar and 3% for
//! Academic (an active Stripe subscription; its period is re-anchored too).
//!
//! **Activity**: each user has an activity factor `f` from a Lomax (Pareto II) law with shape
//! 1.16 (the "80/20" tail), capped at 400: median 0.82, mean ≈ 3.9 after the cap. Most users are
//! light, a long tail is heavy. Per user, with a ±50% jitter each: highlights ≈ 8f (at most
//! 5,000), notes ≈ 2f (at most 1,500; 65% on one verse, 30% on 2–6 verses, 5% running into the
//! next chapter; 10% link 1–3 other verses), bookmarks ≈ f (at most 400, one per verse),
//! chapters read ≈ 12f (at most every chapter; light readers open popular chapters, heavy
//! ones read through books in order), 75% of them to the end, each with one reading in the
//! history. Verses are drawn by the same chapter popularity the load uses, so readers meet
//! their own highlights and notes on the pages they open. Timestamps fall between the user's
//! sign-up and the anchor (2026-12-01).

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};

use crate::canon::Canon;
use crate::ids::{random_uuid, timestamp, user_id_for_clerk};
use crate::rng::{Rng, Weighted, hash_name};

/// 2026-12-01 00:00:00 UTC: the seed's "now" for everything in the past.
pub const ANCHOR: i64 = 1_796_083_200;
/// Bumped whenever the generator's output changes (part of the seed marker).
pub const GENERATOR: u32 = 1;
const DAY: i64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Free: the trial ended.
    Reader,
    /// In the sign-up trial (Scholar's entitlements).
    Trial,
    Scholar,
    Academic,
}

impl Plan {
    /// Whether the plan unlocks the interlinear (`Passage.words`).
    pub fn interlinear(self) -> bool {
        self != Self::Reader
    }
}

/// One seeded user.
#[derive(Debug, Clone)]
pub struct User {
    pub clerk_id: String,
    pub id: String,
    pub plan: Plan,
    pub activity: f64,
}

/// User `index` of the seed `seed` (what the load signs in as).
pub fn user(seed: u64, index: u32) -> User {
    let clerk_id = format!("user_bench{seed}_{index:05}");
    let mut rng = Rng::derive(seed, &[hash_name("user"), u64::from(index)]);
    let plan = match rng.f64() {
        u if u < 0.60 => Plan::Reader,
        u if u < 0.85 => Plan::Trial,
        u if u < 0.97 => Plan::Scholar,
        _ => Plan::Academic,
    };
    let u = rng.f64();
    let activity = ((1.0 - u).powf(-1.0 / 1.16) - 1.0).min(400.0);
    User {
        id: user_id_for_clerk(&clerk_id),
        clerk_id,
        plan,
        activity,
    }
}

/// The seed's identity: the same marker means the same rows.
pub fn marker(users: u32, seed: u64) -> String {
    format!("users={users} seed={seed} generator={GENERATOR} anchor={ANCHOR}")
}

const COLORS: [(&str, f64); 12] = [
    ("faith", 14.0),
    ("repentance", 8.0),
    ("baptism", 5.0),
    ("holy_ghost", 6.0),
    ("enduring", 4.0),
    ("christ", 14.0),
    ("covenant", 6.0),
    ("prophecy", 5.0),
    ("personal_yellow", 18.0),
    ("personal_green", 8.0),
    ("personal_blue", 7.0),
    ("personal_pink", 5.0),
];

const WORDS: &[&str] = &[
    "faith",
    "light",
    "covenant",
    "prayer",
    "remember",
    "mercy",
    "grace",
    "the",
    "Lord",
    "and",
    "of",
    "in",
    "my",
    "heart",
    "this",
    "verse",
    "shows",
    "how",
    "God",
    "keeps",
    "his",
    "promise",
    "repent",
    "joy",
    "family",
    "scripture",
    "study",
    "today",
    "question",
    "why",
    "teaches",
    "temple",
    "hope",
    "charity",
    "servant",
    "children",
    "Israel",
    "Nephi",
    "Alma",
    "Jesus",
    "Christ",
    "peace",
    "strength",
    "trial",
    "answer",
    "read",
    "again",
    "with",
    "lesson",
    "Sunday",
    "compare",
    "chapter",
    "cross",
    "reference",
    "Hebrew",
    "Greek",
    "word",
    "means",
];

/// COPY text format: backslash, tab and line breaks escaped.
fn copy_text(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

fn sentence(rng: &mut Rng, words: u64) -> String {
    let mut text: Vec<&str> = (0..words)
        .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
        .collect();
    if let Some(first) = text.first_mut() {
        *first = if *first == "the" { "The" } else { first };
    }
    format!("{}.", text.join(" "))
}

/// A moment between `from` and `until` (Unix seconds).
fn between(rng: &mut Rng, from: i64, until: i64) -> i64 {
    from + rng.below(u64::try_from((until - from).max(1)).unwrap_or(1)) as i64
}

struct Files {
    users: BufWriter<std::fs::File>,
    subscriptions: BufWriter<std::fs::File>,
    customers: BufWriter<std::fs::File>,
    trial_age: BufWriter<std::fs::File>,
    highlights: BufWriter<std::fs::File>,
    notes: BufWriter<std::fs::File>,
    bookmarks: BufWriter<std::fs::File>,
    progress: BufWriter<std::fs::File>,
    history: BufWriter<std::fs::File>,
}

fn create(dir: &Path, name: &str) -> anyhow::Result<BufWriter<std::fs::File>> {
    let path = dir.join(format!("{name}.tsv"));
    Ok(BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    ))
}

#[derive(Default)]
struct Totals {
    plans: [u64; 4],
    highlights: Vec<u64>,
    notes: u64,
    note_verses: u64,
    bookmarks: u64,
    chapters_read: Vec<u64>,
    idle_users: u64,
}

fn percentiles(values: &mut [u64]) -> Value {
    values.sort_unstable();
    let at = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
    json!({"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0),
           "mean": values.iter().sum::<u64>() as f64 / values.len() as f64})
}

/// Writes the COPY files into `dir`; returns a summary of what they hold.
pub fn write(canon: &Canon, users: u32, seed: u64, dir: &Path) -> anyhow::Result<Value> {
    std::fs::create_dir_all(dir)?;
    let mut files = Files {
        users: create(dir, "users")?,
        subscriptions: create(dir, "subscriptions")?,
        customers: create(dir, "customers")?,
        trial_age: create(dir, "trial_age")?,
        highlights: create(dir, "highlights")?,
        notes: create(dir, "notes")?,
        bookmarks: create(dir, "bookmarks")?,
        progress: create(dir, "progress")?,
        history: create(dir, "history")?,
    };
    let colors = Weighted::new(&COLORS.map(|(_, w)| w));
    let mut totals = Totals::default();
    for index in 0..users {
        write_user(canon, seed, index, &colors, &mut files, &mut totals)?;
    }
    for file in [
        &mut files.users,
        &mut files.subscriptions,
        &mut files.customers,
        &mut files.trial_age,
        &mut files.highlights,
        &mut files.notes,
        &mut files.bookmarks,
        &mut files.progress,
        &mut files.history,
    ] {
        file.flush()?;
    }
    let highlights: u64 = totals.highlights.iter().sum();
    let chapters_read: u64 = totals.chapters_read.iter().sum();
    Ok(json!({
        "marker": marker(users, seed),
        "users": users,
        "plans": {"reader": totals.plans[0], "trial": totals.plans[1],
                  "scholar": totals.plans[2], "academic": totals.plans[3]},
        "users_without_study_data": totals.idle_users,
        "rows": {"highlights": highlights, "notes": totals.notes, "bookmarks": totals.bookmarks,
                 "reading_progress": chapters_read, "reading_history": chapters_read},
        "note_verses_mean": totals.note_verses as f64 / totals.notes.max(1) as f64,
        "highlights_per_user": percentiles(&mut totals.highlights),
        "chapters_read_per_user": percentiles(&mut totals.chapters_read),
    }))
}

fn write_user(
    canon: &Canon,
    seed: u64,
    index: u32,
    colors: &Weighted,
    files: &mut Files,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    let user = user(seed, index);
    let mut rng = Rng::derive(seed, &[hash_name("rows"), u64::from(index)]);
    let id = &user.id;
    let plan_index = match user.plan {
        Plan::Reader => 0,
        Plan::Trial => 1,
        Plan::Scholar => 2,
        Plan::Academic => 3,
    };
    totals.plans[plan_index] += 1;
    let signed_up = match user.plan {
        Plan::Trial => ANCHOR - rng.between(0, 13 * DAY as u64) as i64,
        _ => ANCHOR - rng.between(30 * DAY as u64, 900 * DAY as u64) as i64,
    };
    let ts = timestamp;
    writeln!(
        files.users,
        "{id}\t{}\treader{index}@bench.gospelib.invalid\tReader\tNo. {index}\t{}\t{}\t{}",
        user.clerk_id,
        ts(signed_up),
        ts(signed_up),
        ts(between(&mut rng, signed_up, ANCHOR))
    )?;
    // The sign-up trial, as billing's trial consumer writes it.
    let trial_end = signed_up + 14 * DAY;
    let announced = if user.plan == Plan::Trial {
        writeln!(files.trial_age, "{id}\t{}", ANCHOR - signed_up)?;
        "\\N".to_owned()
    } else {
        ts(trial_end - 3 * DAY)
    };
    writeln!(
        files.subscriptions,
        "{}\t{id}\tscholar\ttrialing\t\\N\ttrial\t\\N\t\\N\t\\N\t{}\t{}\t{}\t{}\t{announced}",
        random_uuid(&mut rng),
        ts(trial_end),
        ts(signed_up),
        ts(signed_up),
        ts(signed_up),
    )?;
    if matches!(user.plan, Plan::Scholar | Plan::Academic) {
        let customer = format!("cus_bench{seed}_{index}");
        let paid_from = trial_end + rng.between(0, 7 * DAY as u64) as i64;
        let interval = if rng.chance(0.6) { "monthly" } else { "yearly" };
        writeln!(files.customers, "{id}\t{customer}\t{}", ts(paid_from))?;
        writeln!(
            files.subscriptions,
            "{}\t{id}\t{}\tactive\t{interval}\tstripe\tsub_bench{seed}_{index}\t{customer}\t{}\t\\N\t{}\t{}\t{}\t\\N",
            random_uuid(&mut rng),
            if user.plan == Plan::Scholar {
                "scholar"
            } else {
                "academic"
            },
            ts(ANCHOR + 20 * DAY),
            ts(paid_from),
            ts(paid_from),
            ts(paid_from),
        )?;
    }

    let f = user.activity;
    let mut count =
        |scale: f64, cap: u64| -> u64 { ((f * scale * (0.5 + rng.f64())).floor() as u64).min(cap) };
    let highlights = count(8.0, 5_000);
    let notes = count(2.0, 1_500);
    let bookmarks = count(1.0, 400);
    let chapters = count(12.0, canon.chapters.len() as u64);
    totals.highlights.push(highlights);
    totals.chapters_read.push(chapters);
    if highlights + notes + bookmarks + chapters == 0 {
        totals.idle_users += 1;
    }

    let verse_in = |rng: &mut Rng, chapter: usize| {
        rng.between(1, u64::from(canon.chapters[chapter].verses)) as u16
    };
    for _ in 0..highlights {
        let chapter = canon.popular_chapter(&mut rng);
        let verse = verse_in(&mut rng, chapter);
        let color = COLORS[colors.sample(&mut rng)].0;
        writeln!(
            files.highlights,
            "{}\t{id}\t{}\t{color}\t{}",
            random_uuid(&mut rng),
            canon.passage_id(chapter, verse),
            ts(between(&mut rng, signed_up, ANCHOR))
        )?;
    }
    for _ in 0..notes {
        let chapter = canon.popular_chapter(&mut rng);
        let start = verse_in(&mut rng, chapter);
        let verses = canon.chapters[chapter].verses;
        let roll = rng.f64();
        let (end_chapter, end) = if roll < 0.65 {
            (chapter, start)
        } else if roll < 0.95
            || chapter + 1 >= canon.chapters.len()
            || canon.chapters[chapter + 1].book != canon.chapters[chapter].book
        {
            (chapter, (start + rng.between(1, 5) as u16).min(verses))
        } else {
            (
                chapter + 1,
                rng.between(1, u64::from(canon.chapters[chapter + 1].verses.min(3))) as u16,
            )
        };
        let (start_order, end_order) = (canon.order(chapter, start), canon.order(end_chapter, end));
        totals.notes += 1;
        totals.note_verses += if end_chapter == chapter {
            u64::from(end - start + 1)
        } else {
            u64::from(verses - start + 1 + end)
        };
        let words = rng.between(6, 40) * if rng.chance(0.1) { 4 } else { 1 };
        let text = sentence(&mut rng, words);
        let body = json!({"type": "doc", "content": [{"type": "paragraph",
                          "content": [{"type": "text", "text": text}]}]});
        let links = if rng.chance(0.1) {
            let ids: Vec<String> = (0..rng.between(1, 3))
                .map(|_| {
                    let c = canon.popular_chapter(&mut rng);
                    let v = verse_in(&mut rng, c);
                    canon.passage_id(c, v)
                })
                .collect();
            format!("{{{}}}", ids.join(","))
        } else {
            "{}".to_owned()
        };
        let created = between(&mut rng, signed_up, ANCHOR);
        let updated = between(&mut rng, created, ANCHOR);
        let version = if updated > created {
            rng.between(2, 5)
        } else {
            1
        };
        writeln!(
            files.notes,
            "{}\t{id}\t{}\t{}\t{start_order}\t{end_order}\t{}\t{}\t{links}\t{version}\t{}\t{}",
            random_uuid(&mut rng),
            canon.passage_id(chapter, start),
            canon.passage_id(end_chapter, end),
            copy_text(&body.to_string()),
            copy_text(&text),
            ts(created),
            ts(updated),
        )?;
    }
    let mut bookmarked = HashSet::new();
    for _ in 0..bookmarks {
        let chapter = canon.popular_chapter(&mut rng);
        let passage = canon.passage_id(chapter, verse_in(&mut rng, chapter));
        if !bookmarked.insert(passage.clone()) {
            continue;
        }
        totals.bookmarks += 1;
        let label = if rng.chance(0.3) {
            let words = rng.between(1, 4);
            sentence(&mut rng, words)
        } else {
            "\\N".to_owned()
        };
        writeln!(
            files.bookmarks,
            "{}\t{id}\t{passage}\t{label}\t{}",
            random_uuid(&mut rng),
            ts(between(&mut rng, signed_up, ANCHOR))
        )?;
    }
    // Light readers open popular chapters; heavy ones read books through, in order.
    let total = canon.chapters.len();
    let read: Vec<usize> = if chapters as usize <= total / 4 {
        let mut seen = HashSet::new();
        let mut attempts = 0;
        while seen.len() < chapters as usize && attempts < chapters * 30 {
            seen.insert(canon.popular_chapter(&mut rng));
            attempts += 1;
        }
        let mut read: Vec<usize> = seen.into_iter().collect();
        read.sort_unstable();
        read
    } else {
        let start = rng.below(total as u64) as usize;
        (0..chapters as usize)
            .map(|k| (start + k) % total)
            .collect()
    };
    *totals.chapters_read.last_mut().expect("pushed above") = read.len() as u64;
    for chapter in read {
        let verses = canon.chapters[chapter].verses;
        let completed = rng.chance(0.75);
        let last = if completed {
            verses
        } else {
            verse_in(&mut rng, chapter)
        };
        let started = between(&mut rng, signed_up, ANCHOR);
        let updated = between(&mut rng, started, (started + 30 * DAY).min(ANCHOR));
        let chapter_id = canon.chapter_id(chapter);
        writeln!(
            files.progress,
            "{id}\t{chapter_id}\t{last}\t{}\t{}\t{}",
            if completed { "t" } else { "f" },
            ts(started),
            ts(updated)
        )?;
        writeln!(files.history, "{id}\t{chapter_id}\t{}", ts(updated))?;
    }
    Ok(())
}
