// A partner's client code (a church website's verse widget), written against the types GraphQL
// Code Generator made from the introspected partner contract: tsc --strict checks that it
// reads the answers as the contract shapes them (nullable fields handled, enums exhaustive).

import type {
  BookIndexQuery,
  ChapterTextQuery,
  Corpus,
  PassageLookupQuery,
  PassageLookupQueryVariables,
  VerseSearchQuery,
} from '../generated/operations.js';

/** A verse as the widget shows it. */
export interface VerseCard {
  id: string;
  reference: string;
  text: string;
  collection: string;
  /** The verses before and after, for the widget's arrows (none at a corpus's ends). */
  previousId: string | null;
  nextId: string | null;
}

/** A GraphQL answer: data, errors, or both. */
export interface GraphQlAnswer<Data> {
  data?: Data | null;
  errors?: ReadonlyArray<{ message: string; path?: ReadonlyArray<string | number>; extensions?: { code?: string } }>;
}

function collection(corpus: Corpus | null): string {
  switch (corpus) {
    case 'BIBLE':
      return 'King James Bible';
    case 'BOOK_OF_MORMON':
      return 'Book of Mormon';
    case null:
      return 'Scripture';
    default: {
      // A corpus added to the contract without this widget knowing it fails to compile.
      const unknown: never = corpus;
      return unknown;
    }
  }
}

/**
 * The cards of a PassageLookup answer, in the order asked; an id the platform does not have
 * is `null` in `passages` (with a `PASSAGE_NOT_FOUND` error) and is left out.
 */
export function verseCards(result: PassageLookupQuery): VerseCard[] {
  return result.passages.flatMap((passage) =>
    passage === null
      ? []
      : [
          {
            id: passage.id,
            reference: passage.reference,
            text: passage.text,
            collection: collection(passage.corpus),
            previousId: passage.previous?.id ?? null,
            nextId: passage.next?.id ?? null,
          },
        ],
  );
}

/** Asks the platform for verses by id with the PassageLookup document; the widget's cards. */
export async function lookUpVerses(
  endpoint: string,
  apiKey: string,
  document: string,
  variables: PassageLookupQueryVariables,
): Promise<VerseCard[]> {
  const response = await fetch(endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': apiKey },
    body: JSON.stringify({ query: document, variables }),
  });
  const answer = (await response.json()) as GraphQlAnswer<PassageLookupQuery>;
  if (!answer.data) {
    const codes = (answer.errors ?? []).map((error) => error.extensions?.code ?? error.message);
    throw new Error(`PassageLookup failed (HTTP ${response.status}): ${codes.join(', ')}`);
  }
  return verseCards(answer.data);
}

/** A chapter as numbered lines ("1 The LORD is my shepherd…"), or none when it is unknown. */
export function chapterLines(result: ChapterTextQuery): { title: string; lines: string[] } | null {
  const chapter = result.chapter;
  if (chapter === null) {
    return null;
  }
  return {
    title: chapter.reference,
    lines: chapter.verses.map((verse) => `${verse.verse} ${verse.text}`),
  };
}

/** Search hits as the widget lists them, the match marked by the platform (or the plain text). */
export function searchHits(result: VerseSearchQuery): { reference: string; snippet: string }[] {
  return result.search.edges.map((edge) => ({
    reference: edge.node.reference,
    snippet: edge.highlight ?? edge.node.text,
  }));
}

/** A book's table of contents: chapter numbers with their verse counts. */
export function tableOfContents(result: BookIndexQuery): Map<number, number> {
  const contents = new Map<number, number>();
  for (const chapter of result.book?.chapters ?? []) {
    contents.set(chapter.number, chapter.verseCount);
  }
  return contents;
}
